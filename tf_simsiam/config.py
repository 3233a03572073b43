"""The configuration of a pretraining run: a plain dataclass, one field per CLI flag of the same name, and its
validation (each error names the flag at fault). Lists of allowed values live with what they select and are only
referred to here (and by the CLI's flag definitions).
"""

import dataclasses
import os

from tf_simsiam import distribute, export, losses, optim, time_budget
from tf_simsiam.data import augment as augment_lib
from tf_simsiam.data import pipeline, sources
from tf_simsiam.models import METHODS, backbones, heads
from tf_simsiam.models.simsiam import PREDICTORS

DEFAULT_OPTIMIZERS = {"simsiam": "sgd", "simclr": "lars", "byol": "lars", "mocov2": "sgd", "barlow": "lars",
                      "vicreg": "lars"}  # each paper's


def _one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"--{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclasses.dataclass
class PretrainConfig:
    method: str = "simsiam"
    # data
    dataset: str = "fashion_mnist"
    data_dir: str = None
    image_size: int = 0  # 0: the data set's own size
    stream: str = "auto"  # auto | true | false: read from disk as needed (see data.sources.ReadOptions)
    memory_budget_gb: float = 4.0
    max_side: int = 0  # 0: twice the training size
    min_side: int = 0
    max_unreadable: float = 0.01
    augment: str = "simsiam_imagenet"
    crop_min_scale: float = 0.2
    color_strength: float = 1.0  # the SimCLR recipe's colour distortion strength s
    augment_on: str = "host"
    # model
    backbone: str = "resnet18"
    width: int = 64
    proj_dim: int = 2048  # SimSiam: projector width and output; SimCLR: output (128), hidden = backbone width
    pred_dim: int = 512
    proj_layers: int = 3
    fix_pred_lr: bool = True
    init_from: str = ""  # an export directory (MODEL_DIR/export) or pretrained:NAME: the backbone starts from it
    # SimSiam's ablations (the paper's defaults): Fig. 2, Tables 1, 3, 4, 5
    stop_gradient: bool = True
    predictor: str = "mlp"  # mlp | none | fixed_random
    proj_bn: str = "all"  # none | hidden | all
    pred_bn: str = "hidden"
    proj_bn_affine: bool = False  # the official code: no scale/shift in the projector's output BN
    pred_bn_affine: bool = False  # with pred_bn=all: a scale/shift in the predictor's output BN
    similarity: str = "cosine"  # cosine | cross_entropy
    symmetric: bool = True
    temperature: float = 0.5  # SimCLR's NT-Xent
    hidden_dim: int = 4096  # BYOL: the hidden width of its projector and predictor (proj_dim: their output, 256)
    byol_tau: float = 0.996  # BYOL: the target decay at the first step, rising to 1 on a cosine
    queue_size: int = 65536  # MoCo v2: the keys kept as negatives (K)
    moco_momentum: float = 0.999  # MoCo v2: the key encoder's moving average (m)
    moco_temperature: float = 0.2  # MoCo v2: InfoNCE's temperature
    barlow_lambda: float = 5e-3  # Barlow Twins' off-diagonal weight
    vicreg_sim_coeff: float = 25.0  # VICReg's invariance, variance and covariance weights (lambda, mu, nu)
    vicreg_std_coeff: float = 25.0
    vicreg_cov_coeff: float = 1.0
    # optimisation (the SimSiam paper's ImageNet recipe)
    batch_size: int = 512
    epochs: int = 100
    steps_per_epoch: int = 0  # 0: every image once per epoch
    time_budget: str = ""  # e.g. "10m": epochs, steps and schedule fitted to it (time_budget.py); "": --epochs
    optimizer: str = ""  # "": the method's own (DEFAULT_OPTIMIZERS)
    base_lr: float = 0.05
    lr_scaling: str = "linear"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 0
    precision: str = "auto"  # mixed_bfloat16 where the hardware has native bf16, else float32
    jit_compile: str = "auto"  # auto | true | false (distribute.resolve_jit_compile)
    steps_per_execution: str = "auto"  # auto or a positive integer (distribute.resolve_steps_per_execution)
    seed: int = 0
    # distribution
    strategy: str = "auto"
    tpu: str = ""
    num_cpu_devices: int = 0  # > 1: split the CPU into that many logical devices
    sync_bn: bool = True  # synchronized BN whenever there are several replicas (the paper)
    # monitors and outputs
    knn_every: int = 1
    knn_dataset: str = ""  # a labelled data set for the kNN monitor; "": the training data set, if it has labels
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_train_size: int = 0  # 0: the whole split
    knn_test_size: int = 0
    linear_probe: bool = False  # after the last kNN evaluation, a linear probe on its features and on raw pixels
    checkpoint_every_steps: int = 1000  # and at each epoch end; 0: at epoch ends only
    model_dir: str = "runs/simsiam"
    export_dir: str = ""  # "": MODEL_DIR/export
    export_formats: str = "saved_model"  # comma-separated: saved_model, onnx, litert (export.FORMATS)
    export_precision: str = "float32"  # the exported encoder's compute precision, whatever the training's

    # settings that must match for a model_dir to be resumed
    MODEL_KEYS = ("stop_gradient", "predictor", "proj_bn", "pred_bn", "proj_bn_affine", "pred_bn_affine",
                  "similarity", "symmetric", "method", "temperature", "hidden_dim", "byol_tau", "queue_size",
                  "moco_momentum", "moco_temperature", "barlow_lambda", "vicreg_sim_coeff",
                  "vicreg_std_coeff", "vicreg_cov_coeff", "optimizer", "lr_scaling", "color_strength",
                  "dataset", "image_size", "backbone", "width", "proj_dim", "pred_dim", "proj_layers",
                  "batch_size", "epochs", "steps_per_epoch", "time_budget", "base_lr", "weight_decay", "momentum",
                  "warmup_epochs", "seed", "augment", "crop_min_scale", "max_side")

    def validate(self):
        """Raises ValueError naming the setting (the CLI flag of the same name) at fault."""
        positive = ("width", "proj_dim", "pred_dim", "hidden_dim", "queue_size", "moco_temperature", "proj_layers",
                    "batch_size", "epochs", "knn_k")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "warmup_epochs", "knn_every", "image_size", "knn_train_size",
                     "knn_test_size", "weight_decay", "num_cpu_devices", "checkpoint_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.base_lr <= 0:
            raise ValueError(f"--base_lr must be > 0, got {self.base_lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"--warmup_epochs={self.warmup_epochs} exceeds --epochs={self.epochs}")
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"--crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        _one_of("method", self.method, METHODS)
        if self.optimizer:
            _one_of("optimizer", self.optimizer, optim.OPTIMIZERS)
        _one_of("lr_scaling", self.lr_scaling, optim.LR_SCALINGS)
        _one_of("predictor", self.predictor, PREDICTORS)
        _one_of("proj_bn", self.proj_bn, heads.BN_PLACEMENTS)
        _one_of("pred_bn", self.pred_bn, heads.BN_PLACEMENTS)
        if self.proj_bn_affine and self.proj_bn != "all":
            raise ValueError(f"--proj_bn_affine needs --proj_bn=all (a BN at the projector output), "
                             f"got --proj_bn={self.proj_bn}")
        if self.pred_bn_affine and self.pred_bn != "all":
            raise ValueError(f"--pred_bn_affine needs --pred_bn=all (a BN at the predictor output), "
                             f"got --pred_bn={self.pred_bn}")
        _one_of("similarity", self.similarity, tuple(losses.SIMILARITIES))
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        for name in ("byol_tau", "moco_momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        keys_per_step = self.batch_size * (2 if self.symmetric else 1)
        if self.method == "mocov2" and self.queue_size < keys_per_step:
            raise ValueError(f"--queue_size={self.queue_size} is smaller than the {keys_per_step} keys a step "
                             f"enqueues (--batch_size={self.batch_size}"
                             f"{', both views: --symmetric' if self.symmetric else ''})")
        for name in ("barlow_lambda", "vicreg_sim_coeff", "vicreg_std_coeff", "vicreg_cov_coeff"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.color_strength < 0:
            raise ValueError(f"--color_strength must be >= 0, got {self.color_strength}")
        _one_of("precision", self.precision, distribute.PRECISIONS)
        _one_of("augment", self.augment, tuple(augment_lib.RECIPES))
        _one_of("augment_on", self.augment_on, pipeline.AUGMENT_PLACEMENTS)
        backbones.check_name(self.backbone)
        if isinstance(self.jit_compile, bool):  # a Python caller's True / False
            self.jit_compile = str(self.jit_compile).lower()
        _one_of("jit_compile", self.jit_compile, distribute.JIT_COMPILE)
        if self.steps_per_execution != "auto":
            distribute.resolve_steps_per_execution(self.steps_per_execution, None, 1)
        _one_of("strategy", self.strategy, distribute.STRATEGIES)
        if self.num_cpu_devices > 1 and self.strategy in ("default", "tpu"):
            raise ValueError(f"--num_cpu_devices={self.num_cpu_devices} needs --strategy=auto, mirrored or "
                             f"multi_worker, not {self.strategy}")
        if not self.model_dir:
            raise ValueError("--model_dir must not be empty")
        if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
            raise ValueError(f"--model_dir={self.model_dir} is a file, not a directory: choose another --model_dir")
        time_budget.parse(self.time_budget)
        export.parse_formats(self.export_formats)
        _one_of("export_precision", self.export_precision, export.PRECISIONS)
        self.read_options()

    def read_options(self):
        """How the data sets are read (raises ValueError naming the flag at fault)."""
        return sources.ReadOptions(stream=self.stream, memory_budget_gb=self.memory_budget_gb,
                                   max_side=self.max_side, min_side=self.min_side,
                                   max_unreadable=self.max_unreadable)

    def optimizer_name(self):
        return self.optimizer or DEFAULT_OPTIMIZERS[self.method]

    def to_json(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
