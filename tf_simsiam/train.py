"""Pretrain a SimSiam or SimCLR encoder:  python -m tf_simsiam.train --flagfile=configs/fashion_mnist.cfg

The only module that reads flags: they become a plain PretrainConfig for tf_simsiam.pretrain.
Running the same command again resumes an interrupted run from its last checkpoint.
"""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines drown the progress

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from tf_simsiam import distribute, export, losses, models, optim, pretrained  # noqa: E402
from tf_simsiam.config import PretrainConfig  # noqa: E402
from tf_simsiam.data import augment, pipeline, sources  # noqa: E402
from tf_simsiam.models import heads, simsiam  # noqa: E402

D = PretrainConfig()  # defaults live in one place: the config

flags.DEFINE_enum("method", D.method, list(models.METHODS), "simsiam (stop-gradient + predictor, SGD), simclr "
                  "(NT-Xent with negatives from the whole global batch, LARS), byol (a predictor against a "
                  "moving-average target network, LARS), mocov2 (InfoNCE against a momentum key encoder and a queue of "
                  "negatives, SGD), barlow (Barlow Twins: the views' cross-correlation made "
                  "the identity, LARS) or vicreg (invariance, variance and covariance terms, LARS).")
flags.DEFINE_string("dataset", D.dataset, "fashion_mnist (offline: Debian package dataset-fashion-mnist), "
                    "tfds:NAME (TensorFlow Datasets) or folder:PATH (JPEG/PNG/BMP/GIF; class sub-folders "
                    "give labels).")
flags.DEFINE_string("data_dir", D.data_dir, "TFDS data directory for tfds: data sets.")
flags.DEFINE_integer("image_size", D.image_size, "The side of the square views; 0: the data set's own size "
                     "(square images of one size; folder: data sets need it).", lower_bound=0)
flags.DEFINE_enum("stream", D.stream, list(sources.STREAM_MODES), "Read the training images from disk as "
                  "training needs them (true), keep them decoded in memory (false), or stream only a data set "
                  "whose decoded images would exceed --memory_budget_gb (auto).")
flags.DEFINE_float("memory_budget_gb", D.memory_budget_gb, "Memory for decoded images, in GiB: with --stream=auto "
                   "a larger data set is streamed.")
flags.DEFINE_integer("max_side", D.max_side, "In memory, images are kept at most this many pixels on the shorter "
                     "side (aspect ratio kept), crops are cut from them; 0: twice --image_size. Streams crop the "
                     "original files.", lower_bound=0)
flags.DEFINE_integer("min_side", D.min_side, "Images smaller than this on the shorter side stop the run with "
                     "their paths (0: any size).", lower_bound=0)
flags.DEFINE_float("max_unreadable", D.max_unreadable, "The fraction of a folder's image files that may be "
                   "unreadable: each is logged by path and skipped; more stops the run with the list.",
                   lower_bound=0, upper_bound=1)
flags.DEFINE_enum("augment", D.augment, list(augment.RECIPES),
                  "Augmentation recipe: SimSiam's ImageNet one, its CIFAR variant (no blur), SimCLR's "
                  "(colour strength --color_strength, blur only above 64 pixels), or BYOL's asymmetric one "
                  "(blur p 1.0 / 0.1 above 64 pixels, solarisation p 0 / 0.2; also Barlow Twins' and VICReg's).")
flags.DEFINE_float("color_strength", D.color_strength, "SimCLR's colour distortion strength s (1.0 ImageNet, "
                   "0.5 CIFAR-10); --augment=simclr only.", lower_bound=0)
flags.DEFINE_float("crop_min_scale", D.crop_min_scale, "Lower bound of the random-resized-crop area "
                   "(SimSiam: 0.2; SimCLR: 0.08).")
flags.DEFINE_enum("augment_on", D.augment_on, list(pipeline.AUGMENT_PLACEMENTS), "Augment in the tf.data pipeline (host) or "
                  "inside the train step on the accelerator (device).")
flags.DEFINE_string("backbone", D.backbone, "resnet18 (CIFAR stem, --width), resnet50 (torchvision's ResNet-50 "
                    "v1.5, the paper's) or keras:NAME, any keras.applications model (e.g. keras:EfficientNetV2B0, "
                    "keras:ConvNeXtTiny), random weights, with its own preprocessing.")
flags.DEFINE_integer("width", D.width, "ResNet-18 width (channels of the first stage; the paper: 64).",
                     lower_bound=1)
flags.DEFINE_integer("proj_dim", D.proj_dim, "SimSiam: projector width and output dimension (2048); SimCLR and "
                     "MoCo v2: head output dimension (128; its hidden width is the backbone's); Barlow Twins and "
                     "VICReg: projector width and output dimension (8192); BYOL: output of the projector and "
                     "predictor (256).", lower_bound=1)
flags.DEFINE_integer("hidden_dim", D.hidden_dim, "BYOL: hidden width of the projector and predictor (4096).",
                     lower_bound=1)
flags.DEFINE_integer("pred_dim", D.pred_dim, "Predictor bottleneck width (the paper: 512).", lower_bound=1)
flags.DEFINE_integer("proj_layers", D.proj_layers, "Projector layers: SimSiam 3 (ImageNet) or 2 (CIFAR); "
                     "SimCLR 2 (v1) or 3 (v2); Barlow Twins and VICReg 3.",
                     lower_bound=1)
flags.DEFINE_bool("stop_gradient", D.stop_gradient, "SimSiam's stop-gradient on the target branch (off: the "
                  "paper's Fig. 2 collapse).")
flags.DEFINE_enum("predictor", D.predictor, list(simsiam.PREDICTORS), "SimSiam's predictor: the trained "
                  "MLP, none (p = z) or a fixed random MLP (the paper's Table 1).")
flags.DEFINE_enum("proj_bn", D.proj_bn, list(heads.BN_PLACEMENTS), "BN in the projector: none, hidden layers "
                  "only, or hidden and output (the paper's Table 3).")
flags.DEFINE_bool("proj_bn_affine", D.proj_bn_affine, "A learned scale and shift (gamma, beta) in the projector's "
                  "output BN, PyTorch's default BatchNorm1d as the paper's text reads; the official code has none, "
                  "which keeps z at zero mean per channel (no constant collapse possible).")
flags.DEFINE_enum("pred_bn", D.pred_bn, list(heads.BN_PLACEMENTS), "BN in the predictor (the paper: hidden).")
flags.DEFINE_bool("pred_bn_affine", D.pred_bn_affine, "With --pred_bn=all: a learned scale and shift in the "
                  "predictor's output BN (PyTorch's default BatchNorm1d; the paper gives no code for this variant).")
flags.DEFINE_enum("similarity", D.similarity, list(losses.SIMILARITIES), "SimSiam's D: negative cosine or the "
                  "softmax cross-entropy variant (the paper's Table 4).")
flags.DEFINE_bool("symmetric", D.symmetric, "SimSiam's symmetrised loss (off: D(p1, sg(z2)) only, Table 5); "
                  "MoCo v2: both views as queries (as SimSiam's Table 4), off: MoCo's one direction.")
flags.DEFINE_float("temperature", D.temperature, "SimCLR's NT-Xent temperature (0.5 CIFAR-10, 0.1 ImageNet).",
                   lower_bound=1e-6)
flags.DEFINE_float("byol_tau", D.byol_tau, "BYOL: the target network's decay at the first step, rising to 1 "
                   "on a cosine over the run (the paper: 0.996).", lower_bound=0, upper_bound=1)
flags.DEFINE_integer("queue_size", D.queue_size, "MoCo v2: the keys kept as negatives (the paper: 65536); at "
                     "least the keys of a step (the global batch, twice with --symmetric).", lower_bound=1)
flags.DEFINE_float("moco_momentum", D.moco_momentum, "MoCo v2: the key encoder's moving-average momentum m (the "
                   "paper: 0.999).", lower_bound=0, upper_bound=1)
flags.DEFINE_float("moco_temperature", D.moco_temperature, "MoCo v2: InfoNCE's temperature (the paper: 0.2).",
                   lower_bound=1e-6)
flags.DEFINE_float("barlow_lambda", D.barlow_lambda, "Barlow Twins' weight of the off-diagonal terms (the paper: "
                   "5e-3).", lower_bound=0)
flags.DEFINE_float("vicreg_sim_coeff", D.vicreg_sim_coeff, "VICReg's weight of the invariance term (lambda: 25).",
                   lower_bound=0)
flags.DEFINE_float("vicreg_std_coeff", D.vicreg_std_coeff, "VICReg's weight of the variance term (mu: 25).",
                   lower_bound=0)
flags.DEFINE_float("vicreg_cov_coeff", D.vicreg_cov_coeff, "VICReg's weight of the covariance term (nu: 1).",
                   lower_bound=0)
flags.DEFINE_string("init_from", D.init_from, "An export directory (a run's MODEL_DIR/export, or "
                    "tf_simsiam.export's --export_dir) or pretrained:NAME, an encoder shipped with tf_simsiam "
                    f"({', '.join(pretrained.NAMES)}): the backbone starts from its weights and takes its "
                    "normalisation; --backbone, --width and the image size must be the export's. The heads start "
                    "from scratch. Empty: a random initialisation.")
flags.DEFINE_bool("fix_pred_lr", D.fix_pred_lr, "Keep the predictor at the initial learning rate (the paper).")
flags.DEFINE_integer("batch_size", D.batch_size, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("epochs", D.epochs, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", D.steps_per_epoch, "Cap on steps per epoch; 0: every image once.",
                     lower_bound=0)
flags.DEFINE_string("time_budget", D.time_budget, "Wall time for the whole run, e.g. 10m, 90s or 1.5h: the step "
                    "rate measured on this machine sets the steps and the learning-rate schedule so that training "
                    "and its kNN evaluations end within it (the export follows); --epochs is then the most it "
                    "trains and --warmup_epochs / --epochs the warmup's share. Recorded in config.json: a resumed "
                    "run keeps the plan. Empty: train --epochs.")
flags.DEFINE_enum("optimizer", D.optimizer or None, list(optim.OPTIMIZERS), "SGD with momentum and coupled weight "
                  "decay, or LARS (BN and biases excluded); default: sgd for SimSiam, lars for the others.")
flags.DEFINE_float("base_lr", D.base_lr, "Base learning rate: lr = base_lr * batch_size / 256 (linear "
                   "scaling) or base_lr * sqrt(batch_size) (--lr_scaling=sqrt).")
flags.DEFINE_enum("lr_scaling", D.lr_scaling, list(optim.LR_SCALINGS), "How the learning rate grows with the batch: "
                  "linear (both papers; SimCLR 0.3) or square root (SimCLR 0.075).")
flags.DEFINE_float("weight_decay", D.weight_decay, "Coupled L2 weight decay (the paper: 1e-4; CIFAR 5e-4).",
                   lower_bound=0)
flags.DEFINE_float("momentum", D.momentum, "SGD momentum.", lower_bound=0, upper_bound=0.999999)
flags.DEFINE_integer("warmup_epochs", D.warmup_epochs, "Linear warmup epochs before the cosine decay.",
                     lower_bound=0)
flags.DEFINE_enum("precision", D.precision, list(distribute.PRECISIONS), "Keras dtype policy; auto: "
                  "mixed_bfloat16 on a TPU, a GPU of compute capability >= 8.0 or a CPU with AVX512-BF16/AMX, "
                  "else float32 (emulated bfloat16 is several times slower).")
flags.DEFINE_enum("jit_compile", D.jit_compile, list(distribute.JIT_COMPILE), "Compile the train step with XLA; "
                  "auto: on for one GPU or a TPU, off on CPUs (slower there, see the benchmarks page) and with "
                  "several CPU replicas (where it fails) or GPUs.")
flags.DEFINE_string("steps_per_execution", D.steps_per_execution, "Train steps per compiled call: a positive "
                    "integer, or auto: 128 on a TPU, 16 on GPUs (amortising the host round trip), 1 on CPUs.")
flags.DEFINE_enum("strategy", D.strategy, list(distribute.STRATEGIES),
                  "Distribution: auto picks tpu if --tpu is given, multi_worker if TF_CONFIG names several tasks, "
                  "mirrored if there are several GPUs (or --num_cpu_devices > 1), else default (one device).")
flags.DEFINE_string("tpu", D.tpu, "TPU name or grpc:// address for --strategy=tpu ('local' on a TPU VM).")
flags.DEFINE_integer("num_cpu_devices", D.num_cpu_devices, "Split the CPU into this many logical devices "
                     "(to try mirrored/multi-worker training on a CPU); 0: no split.", lower_bound=0)
flags.DEFINE_bool("sync_bn", D.sync_bn, "Synchronized BatchNormalization across replicas (the paper); only "
                  "matters with several replicas.")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads; 0 keeps TensorFlow's default.",
                     lower_bound=0)
flags.DEFINE_integer("seed", D.seed, "Seed of weights, data order and augmentations.")
flags.DEFINE_integer("knn_every", D.knn_every, "kNN monitor every N epochs (and after the last); 0: off.",
                     lower_bound=0)
flags.DEFINE_string("knn_dataset", D.knn_dataset, "A labelled data set for the kNN monitor (fashion_mnist, "
                    "tfds:NAME or folder:PATH with class folders), read at the training size; default: the training "
                    "data set, whose labels are never used for training. Without labels and without this flag the "
                    "monitor is off.")
flags.DEFINE_integer("knn_k", D.knn_k, "Neighbours of the kNN monitor.", lower_bound=1)
flags.DEFINE_float("knn_temperature", D.knn_temperature, "Temperature of the kNN monitor's weighted votes.",
                   lower_bound=1e-6)
flags.DEFINE_integer("knn_train_size", D.knn_train_size, "Labelled training images of the kNN monitor "
                     "(seeded subset); 0: all.", lower_bound=0)
flags.DEFINE_integer("knn_test_size", D.knn_test_size, "Test images of the kNN monitor; 0: all.", lower_bound=0)
flags.DEFINE_bool("linear_probe", D.linear_probe, "After the last kNN evaluation, a linear probe (LARS, 90 epochs, "
                  "no augmentation) on its frozen features, beside the same probe on raw pixels.")
flags.DEFINE_integer("checkpoint_every_steps", D.checkpoint_every_steps, "Checkpoint every N global steps, and at "
                     "each epoch end (0: at epoch ends only); a killed run resumes at the last one, mid-epoch too.",
                     lower_bound=0)
flags.DEFINE_string("model_dir", D.model_dir, "Run directory: config, checkpoints, TensorBoard logs, result.json.")
flags.DEFINE_string("export_dir", D.export_dir, "Where the frozen encoder goes; default MODEL_DIR/export.")
flags.DEFINE_string("export_formats", D.export_formats, "Comma-separated export formats: saved_model (always "
                    "written), onnx (ONNX Runtime) and litert (.tflite); onnx needs the export extra.")
flags.DEFINE_enum("export_precision", D.export_precision, list(export.PRECISIONS),
                  "The exported encoder's precision, whatever the training's (float32: the same features on any "
                  "hardware).")

FLAGS = flags.FLAGS


def config_from_flags():
    values = {name: FLAGS[name].value for name in PretrainConfig.__dataclass_fields__}
    values["optimizer"] = values["optimizer"] or ""
    return PretrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.inter_op_threads:
        import tensorflow as tf
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)  # TensorFlow's SavedModel code logs through absl
    logging.getLogger("tf_simsiam").setLevel(logging.INFO)
    from tf_simsiam import pretrain, run_dir
    from tf_simsiam.data import DataError

    config = config_from_flags()
    try:
        config.validate()
        run_dir.prepare(config.model_dir)
        tmp = os.path.join(config.model_dir, f"flags.cfg.{os.getpid()}.tmp")  # workers may write it at once
        with open(tmp, "w") as f:
            f.write(FLAGS.flags_into_string())
        os.replace(tmp, os.path.join(config.model_dir, "flags.cfg"))
        result = pretrain.pretrain(config)
    except (DataError, ValueError, FileNotFoundError, run_dir.TrainingDiverged) as error:
        sys.exit(f"error: {error}")
    if "wall_seconds" not in result:  # not the chief of a multi-worker run: the chief reports
        return
    print()
    if result["knn_top1"] is not None:
        print(f"kNN top-1 (k={config.knn_k}, t={config.knn_temperature}) on {config.dataset}: "
              f"{100 * result['knn_top1']:.2f}%   raw pixels: {100 * result['pixels_knn_top1']:.2f}%")
    if result["linear_top1"] is not None:
        print(f"linear probe on the frozen encoder: {100 * result['linear_top1']:.2f}%   "
              f"raw pixels: {100 * result['pixels_linear_top1']:.2f}%")
    steps = result["epochs"] * result["steps_per_epoch"]
    print(f"trained {result['epochs']} epochs ({steps} steps of {config.batch_size}) in "
          f"{result['train_seconds']:.0f}s" + (f" ({result['pairs_per_sec']:.0f} pairs/s)" if result["pairs_per_sec"]
                                               else "") + f"; the whole run took {result['wall_seconds']:.0f}s")
    if result.get("report"):
        print(f"training report: {result['report']}")
    print(f"encoder exported to {result['export_dir']}; run details in {config.model_dir}/result.json")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
