"""Pretraining as a plain function of a plain config (no flags): what `python -m tf_simsiam.train` runs.

    config = PretrainConfig(dataset="fashion_mnist", epochs=5, model_dir="runs/demo", ...)
    result = pretrain(config)      # trains (resuming if model_dir has a checkpoint), monitors, exports

Writes into model_dir: config.json, checkpoints/, logs/ (TensorBoard), history.csv and result.json.
"""

import dataclasses
import gc
import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_simsiam import callbacks, distribute, evaluation, export, losses, optim, pretrained, run_dir, time_budget
from tf_simsiam.config import PretrainConfig  # noqa: F401 (the runner's config, importable from here too)
from tf_simsiam.data import augment as augment_lib
from tf_simsiam.data import pipeline, sources
from tf_simsiam.models import BYOL, BarlowTwins, MoCoV2, SimCLR, SimSiam, VICReg, backbones
from tf_simsiam.models.two_views import as_float

log = logging.getLogger("tf_simsiam")

def training_size(config, train, flag="dataset"):
    """The side of the square views: --image_size, else the data set's own (square, fixed-size) images."""
    if config.image_size:
        return config.image_size
    if isinstance(train, sources.Split) and train.sizes is None and train.image_shape[0] == train.image_shape[1]:
        return train.image_shape[0]
    raise sources.DataError(f"--{flag}={config.dataset} has images of several sizes or shapes: set --image_size, "
                            f"the side of the square views to train on (for example 224 for photographs)")


def channels_of(data):
    return data.channels if isinstance(data, sources.Stream) else data.images.shape[-1]


def load_train(config, dataset=None, flag="dataset", image_size=None, channels=3):
    """The training images at their own sizes: a Split, or a Stream for data sets read from disk as needed."""
    return sources.load(dataset or config.dataset, "train", config.data_dir, image_size or config.image_size or None,
                        channels, flag, options=config.read_options())


def with_test_split(config, train, dataset, flag, size, channels):
    """(train, test): the data set's test split, or, for a labelled data set without one, 10% of the training
    images held out (seeded)."""
    try:
        test = sources.load(dataset, "test", config.data_dir, size, channels, flag, options=config.read_options())
    except sources.DataError:
        if isinstance(train, sources.Stream) or train.labels is None:
            raise
        log.info("%s has no test split: the kNN monitor holds out 10%% of the training images", dataset)
        index = np.random.default_rng(config.seed).permutation(train.num_examples)
        cut = len(index) // 10
        test, train = train.take(np.sort(index[:cut])), train.take(np.sort(index[cut:]))
    return train, test


def knn_splits(config, train, test, size):
    """The kNN monitor's memory and queries: seeded subsets, in the evaluation view at the training size."""
    def view(data, count):
        if isinstance(data, sources.Stream):
            return data.subset(count, config.seed, size)
        return sources.resized(data.subset(count, config.seed), size)
    return view(train, config.knn_train_size), view(test, config.knn_test_size)


def load_data(config):
    """(train, kNN memory, kNN queries): the pretraining images (at their own sizes) and the labelled splits of
    the kNN monitor (at the training size), or (train, None, None) when the monitor is off: by --knn_every=0, or
    because the data set has no labels and no --knn_dataset names one (said in one log line, with how to get
    the monitor back)."""
    train = load_train(config)
    size, channels = training_size(config, train), channels_of(train)
    if not config.knn_every:
        return train, None, None
    if config.knn_dataset:
        knn_train = load_train(config, config.knn_dataset, "knn_dataset", size, channels)
        if knn_train.labels is None:
            raise sources.DataError(f"--knn_dataset={config.knn_dataset} has no labels: the kNN monitor needs "
                                    f"class folders (PATH/CLASS/image.jpg)")
        if channels_of(knn_train) != channels:
            raise sources.DataError(f"--knn_dataset={config.knn_dataset} has {channels_of(knn_train)}-channel "
                                    f"images, the training images {channels}")
        knn_train, knn_test = with_test_split(config, knn_train, config.knn_dataset, "knn_dataset", size, channels)
        return (train, *knn_splits(config, knn_train, knn_test, size))
    if train.labels is None:
        log.info("the kNN monitor is off: --dataset=%s has no labels (no class folders). To monitor training, "
                 "pass --knn_dataset=folder:PATH, a small labelled set of the same kind of images "
                 "(PATH/CLASS/image.jpg); --knn_every=0 turns the monitor off without this note", config.dataset)
        return train, None, None
    knn_train, knn_test = with_test_split(config, train, config.dataset, "dataset", size, channels)
    if knn_train is not train and not isinstance(train, sources.Stream):
        train = knn_train  # the held-out images are not trained on
    return (train, *knn_splits(config, knn_train, knn_test, size))


def recipe_of(config, size):
    if config.augment == "simclr":
        recipe = augment_lib.simclr(size, config.color_strength)
    else:
        recipe = augment_lib.RECIPES[config.augment](size)
    return dataclasses.replace(recipe, crop_scale=(config.crop_min_scale, 1.0))


def encoder_config(config, train):
    """Arguments of backbones.get; the normalisation uses the training images' own mean and std (of up to
    10,000 of them in memory, 2,000 from a stream, in the evaluation view)."""
    size = training_size(config, train)
    if isinstance(train, sources.Stream):
        images = train.subset(min(2_000, train.num_examples), config.seed, size).images
    else:
        images = sources.resized(train.subset(10_000, config.seed), size).images
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    sample = pixels[:: max(1, len(pixels) // 2_000_000)]
    return {"name": config.backbone, "input_shape": [size, size, images.shape[-1]], "width": config.width,
            "mean": [round(float(m), 4) for m in sample.mean(0)],
            "std": [round(float(s), 4) for s in sample.std(0)]}


def init_encoder_config(export_dir, enc_config):
    """The encoder config of the export that --init_from names, checked against this run's (`enc_config`): the
    same backbone, width and input shape; the export's normalisation is kept (its weights were trained with it)."""
    path = os.path.join(export_dir, export.CONFIG_FILE)
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(export_dir, export.WEIGHTS_FILE))):
        raise ValueError(f"--init_from={export_dir}: no {export.CONFIG_FILE} and {export.WEIGHTS_FILE} there; give "
                         f"an export directory (a run's MODEL_DIR/export)")
    with open(path) as f:
        saved = json.load(f)
    for key, flag in (("name", "--backbone"), ("width", "--width"), ("input_shape", "--image_size")):
        if key in enc_config and saved.get(key) != enc_config[key]:
            raise ValueError(f"--init_from={export_dir} holds a {saved.get('name')} of width {saved.get('width')} "
                             f"on {saved.get('input_shape')} images; this run has {key} {enc_config[key]}: give "
                             f"{flag} as the export's, or leave out --init_from")
    return {**enc_config, **{key: saved[key] for key in ("mean", "std") if key in saved}}


def build_model(config, enc_config, steps_per_epoch, sync_bn=False, jit_compile=False, steps_per_execution=1,
                warmup_steps=None):
    """The compiled model of a config's method; call it under strategy.scope() to distribute it. The
    learning rate warms up over `warmup_steps` (default: config.warmup_epochs of steps_per_epoch), then decays
    to 0 at config.epochs * steps_per_epoch."""
    backbone = backbones.from_encoder_config(enc_config, sync_bn)
    augment = None
    if config.augment_on == "device":
        augment = augment_lib.TwoViews(recipe_of(config, enc_config["input_shape"][0]), seed=config.seed)
    if config.method == "simclr":
        model = SimCLR(backbone, proj_dim=config.proj_dim, proj_layers=config.proj_layers,
                       temperature=config.temperature, sync_bn=sync_bn, augment=augment)
    elif config.method == "byol":
        model = BYOL(backbone, proj_dim=config.proj_dim, hidden_dim=config.hidden_dim, tau_base=config.byol_tau,
                     total_steps=config.epochs * steps_per_epoch, sync_bn=sync_bn, augment=augment)
    elif config.method == "mocov2":
        model = MoCoV2(backbone, proj_dim=config.proj_dim, queue_size=config.queue_size,
                       momentum=config.moco_momentum, temperature=config.moco_temperature,
                       symmetric=config.symmetric, seed=config.seed, augment=augment)
    elif config.method == "barlow":
        model = BarlowTwins(backbone, proj_dim=config.proj_dim, proj_layers=config.proj_layers,
                            lambd=config.barlow_lambda, sync_bn=sync_bn, augment=augment)
    elif config.method == "vicreg":
        model = VICReg(backbone, proj_dim=config.proj_dim, proj_layers=config.proj_layers,
                       sim_coeff=config.vicreg_sim_coeff, std_coeff=config.vicreg_std_coeff,
                       cov_coeff=config.vicreg_cov_coeff, sync_bn=sync_bn, augment=augment)
    else:
        model = SimSiam(backbone, proj_dim=config.proj_dim, pred_dim=config.pred_dim,
                        proj_layers=config.proj_layers, fix_predictor_lr=config.fix_pred_lr, sync_bn=sync_bn,
                        augment=augment, stop_gradient=config.stop_gradient, predictor=config.predictor,
                        proj_bn=config.proj_bn, pred_bn=config.pred_bn, similarity=config.similarity,
                        symmetric=config.symmetric, proj_bn_affine=config.proj_bn_affine,
                        pred_bn_affine=config.pred_bn_affine)
    optimizer = optim.pretrain_optimizer(
        config.optimizer_name(), config.batch_size, config.epochs * steps_per_epoch, base_lr=config.base_lr,
        momentum=config.momentum, weight_decay=config.weight_decay,
        warmup_steps=config.warmup_epochs * steps_per_epoch if warmup_steps is None else warmup_steps,
        lr_scaling=config.lr_scaling)
    model.compile(optimizer=optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model


def pretrain(config):
    """Trains SimSiam or SimCLR as configured, resuming from model_dir's last checkpoint; returns the result dict.

    Under a multi-worker strategy every worker runs this with the same config and a shared model_dir; only the
    chief writes into it.
    """
    config.validate()
    start_time = time.time()
    # first of all: logical CPUs and multi-worker collectives must be set up before TensorFlow starts
    strategy = distribute.get_strategy(config.strategy, tpu=config.tpu, num_cpu_devices=config.num_cpu_devices)
    replicas = strategy.num_replicas_in_sync
    chief = distribute.is_chief(strategy)
    if not chief:
        log.setLevel(logging.WARNING)
    if config.batch_size % replicas:
        raise ValueError(f"--batch_size={config.batch_size} must be a multiple of the {replicas} replicas")
    jit_compile = distribute.resolve_jit_compile(config.jit_compile, strategy)
    sync_bn = config.sync_bn and replicas > 1
    log.info("strategy %s: %d replica(s), global batch %d (%d per replica), %s BN", type(strategy).__name__.lstrip("_"),
             replicas, config.batch_size, config.batch_size // replicas, "synchronized" if sync_bn else "per-replica")
    keras.utils.set_random_seed(config.seed)
    precision = distribute.resolve_precision(config.precision, strategy)
    if precision == "mixed_bfloat16" and distribute.resolve_precision("auto", strategy) == "float32":
        log.warning("--precision=mixed_bfloat16 on hardware without native bfloat16 (a CPU without AVX512-BF16 "
                    "or AMX, or an older GPU): it is emulated, several times slower than float32; "
                    "--precision=auto picks float32")
    log.info("precision: %s%s", precision, " (--precision=auto)" if config.precision == "auto" else "")
    keras.mixed_precision.set_global_policy(precision)
    model_dir = config.model_dir
    run_dir.check_same_run(model_dir, config.to_json(), PretrainConfig.MODEL_KEYS)
    budget = time_budget.parse(config.time_budget)
    plan = run_dir.saved_config(model_dir).get("time_budget_plan") if budget else None
    plan = plan and time_budget.Plan.from_json(plan)  # a resumed run follows the plan it made

    train, knn_train, knn_test = load_data(config)
    need_knn = knn_train is not None
    num_examples = train.num_examples
    steps_per_pass = num_examples // config.batch_size
    if steps_per_pass == 0:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the data set ({num_examples})")
    if config.steps_per_epoch:
        steps_per_pass = min(steps_per_pass, config.steps_per_epoch)
    enc_config = encoder_config(config, train)
    init_dir = pretrained.resolve(config.init_from)  # pretrained:NAME, a shipped encoder, or an export directory
    if init_dir:
        enc_config = init_encoder_config(init_dir, enc_config)
        log.info("backbone initialised from %s (unless a checkpoint is resumed)", config.init_from)
    if chief:
        run_dir.prepare(model_dir)
    checkpoints = os.path.join(model_dir, "checkpoints")
    recipe = recipe_of(config, enc_config["input_shape"][0])

    def dataset_from(step):
        return distribute.distribute_dataset(strategy, lambda input_context: pipeline.pretrain_dataset(
            train, config.batch_size, recipe, seed=config.seed, augment_on=config.augment_on, start_step=step,
            input_context=input_context))

    def build(run_config, steps_per_epoch, warmup_steps=None):
        steps_per_execution = distribute.resolve_steps_per_execution(config.steps_per_execution, strategy,
                                                                     steps_per_epoch)
        keras.utils.set_random_seed(config.seed)  # the same initial weights whatever was built before
        with strategy.scope():
            model = build_model(run_config, enc_config, steps_per_epoch, sync_bn=sync_bn, jit_compile=jit_compile,
                                steps_per_execution=steps_per_execution, warmup_steps=warmup_steps)
            model.optimizer.build(model.trainable_variables)
            if init_dir:  # a checkpoint, when the run resumes, replaces these weights
                model.backbone.load_weights(os.path.join(init_dir, export.WEIGHTS_FILE))
                model.restart_momentum_networks()  # BYOL's target, MoCo's key encoder: from the same weights
        return model, steps_per_execution

    knn = None
    if need_knn:
        knn = callbacks.KNNMonitor(knn_train, knn_test, every=config.knn_every,
                                   k=config.knn_k, temperature=config.knn_temperature, strategy=strategy)
    untrained = {"knn_top1": None, "feature_std": None}
    untrained_path = os.path.join(model_dir, "knn_untrained.json")
    if knn and os.path.exists(untrained_path) and run_dir.checkpoints(checkpoints):
        with open(untrained_path) as f:
            untrained.update(json.load(f))

    def evaluate_untrained(backbone):
        # the same kNN on the untrained network: what a collapsed run falls back to, or below
        started = time.time()
        untrained["knn_top1"], untrained["feature_std"] = knn.evaluate(backbone)
        log.info("kNN top-1 of the untrained backbone: %.2f%% (feature_std %.4g)", 100 * untrained["knn_top1"],
                 untrained["feature_std"])
        if chief:
            run_dir.write_json(untrained_path, untrained)
        return time.time() - started

    run_config, warmup_steps, steps_per_epoch = config, None, steps_per_pass
    if budget and plan is None:
        plan = _plan_budget(config, budget, start_time, build, dataset_from, steps_per_pass, strategy, knn,
                            evaluate_untrained)
        log.info("--time_budget=%s: %s", config.time_budget, plan.describe())
    if plan:
        run_config = dataclasses.replace(config, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch)
        warmup_steps, steps_per_epoch = plan.warmup_steps, plan.steps_per_epoch
    if chief:
        run_dir.write_json(os.path.join(model_dir, "config.json"),
                           {**config.to_json(), "encoder": enc_config, "steps_per_epoch_used": steps_per_epoch,
                            "epochs_used": run_config.epochs, "time_budget_plan": plan and plan.to_json()})

    model, steps_per_execution = build(run_config, steps_per_epoch, warmup_steps)
    log.info("XLA (jit_compile): %s%s; %d step(s) per execution%s", "on" if jit_compile else "off",
             " (--jit_compile=auto)" if config.jit_compile == "auto" else "", steps_per_execution,
             " (--steps_per_execution=auto)" if config.steps_per_execution == "auto" else "")
    with strategy.scope():
        start_step = run_dir.restore(model, checkpoints)
    total_steps = run_config.epochs * steps_per_epoch
    if start_step:
        log.info("resuming at step %d of %d (epoch %d of %d, %d of its %d steps done)", start_step, total_steps,
                 start_step // steps_per_epoch + 1, run_config.epochs, start_step % steps_per_epoch, steps_per_epoch)
    elif knn and untrained["knn_top1"] is None:
        evaluate_untrained(model.backbone)
    initial_epoch = start_step // steps_per_epoch

    monitors = [run_dir.StopOnNonFiniteLoss(
        f"Try a smaller --base_lr (now {config.base_lr}), --warmup_epochs (now {config.warmup_epochs}) or "
        f"--precision=float32; the last good checkpoint in {checkpoints} is kept and nothing was exported.")]
    if knn:
        monitors.append(knn)
    collapse = callbacks.CollapseMonitor(config.proj_dim)
    log_dir = os.path.join(model_dir, "logs")
    # a picture of 8 view pairs for TensorBoard, made with plain TF ops: an XLA compilation would cost seconds
    first_views = next(iter(pipeline.pretrain_dataset(train, 8, recipe, seed=config.seed, jit_compile=False)))
    monitors += [collapse, run_dir.Checkpoint(checkpoints, every_steps=config.checkpoint_every_steps, chief=chief)]
    report = None
    if chief:
        report = callbacks.TrainingReport(model_dir, knn=knn, untrained=untrained, dim=config.proj_dim,
                                          threshold=collapse.threshold)
        monitors += [callbacks.EpochHistory(os.path.join(model_dir, "history.csv")),
                     callbacks.StepHistory(os.path.join(model_dir, "steps.csv"), total_steps), report,
                     keras.callbacks.TensorBoard(log_dir, write_graph=False),
                     callbacks.ViewPairs(log_dir, first_views)]

    train_start = time.time()
    history = {}
    # A run resumed mid-epoch first finishes that epoch (its remaining steps), then trains the others: each
    # segment reads the batches of its own global steps, so the run sees what an uninterrupted one would.
    segments = []
    if start_step % steps_per_epoch:
        segments.append((initial_epoch, initial_epoch + 1, steps_per_epoch - start_step % steps_per_epoch))
    first_full = -(-start_step // steps_per_epoch)
    if first_full < run_config.epochs:
        segments.append((first_full, run_config.epochs, steps_per_epoch))
    for begin, end, steps in segments:
        step = int(model.optimizer.iterations.numpy())
        segment = model.fit(dataset_from(step), epochs=end, steps_per_epoch=steps, initial_epoch=begin,
                            callbacks=monitors, verbose=1 if chief else 0, shuffle=False).history
        for name, values in segment.items():
            history.setdefault(name, []).extend(values)
    if not segments:
        log.info("all %d epochs were already done; exporting", run_config.epochs)
    train_seconds = time.time() - train_start
    trained_steps = total_steps - start_step

    export_dir = config.export_dir or os.path.join(model_dir, "export")
    result = {
        "method": config.method, "dataset": config.dataset, "epochs": run_config.epochs,
        "steps_per_epoch": steps_per_epoch, "time_budget_plan": plan and plan.to_json(),
        "strategy": type(strategy).__name__, "replicas": replicas, "sync_bn": sync_bn,
        "batch_size": config.batch_size, "precision": precision, "jit_compile": jit_compile,
        "steps_per_execution": steps_per_execution, "resumed_from_epoch": initial_epoch,
        "resumed_from_step": start_step,
        "final_loss": _last(history.get("loss")), "final_z_std": _last(history.get("z_std")),
        **{f"final_{name}": _last(history.get(name)) for name in ("contrastive_accuracy", *model.extra_metrics)},
        "z_std_healthy": 1 / math.sqrt(config.proj_dim), "collapsed_epochs": collapse.collapsed_epochs,
        "knn_top1": knn.history[-1][1] if knn and knn.history else None,
        "knn_top1_per_epoch": knn.history if knn else [],
        "feature_std_per_epoch": knn.feature_std_history if knn else [],
        "pixels_knn_top1": knn.pixel_top1 if knn else None, "untrained_knn_top1": untrained["knn_top1"],
        "untrained_feature_std": untrained["feature_std"],
        "train_seconds": round(train_seconds, 1),
        "pairs_per_sec": round(trained_steps * config.batch_size / train_seconds, 1) if trained_steps else None,
        "export_dir": export_dir, "export_precision": config.export_precision,
        "export_formats": list(export.parse_formats(config.export_formats)),
        "linear_top1": None, "pixels_linear_top1": None, "init_from": config.init_from or None,
    }
    if config.linear_probe and knn and knn.last_features is not None:
        started = time.time()
        result["linear_top1"] = evaluation.linear_probe_on_features(
            *knn.last_features, knn.train.labels, knn.test.labels, seed=config.seed)[0]
        result["pixels_linear_top1"] = knn.pixel_linear_top1(seed=config.seed)
        log.info("linear probe on the frozen encoder: %.2f%% (raw pixels: %.2f%%) [%.0fs]",
                 100 * result["linear_top1"], 100 * result["pixels_linear_top1"], time.time() - started)
    if report:
        result["report"] = report.path if segments else report.write()
    if chief:
        export.export_encoder(model.backbone, export_dir, enc_config, formats=config.export_formats,
                              precision=config.export_precision)
        result["wall_seconds"] = round(time.time() - start_time, 1)
        run_dir.write_json(os.path.join(model_dir, "result.json"), result)
    return result


def _plan_budget(config, budget, start_time, build, dataset_from, steps_per_pass, strategy, knn, evaluate_untrained):
    """The time_budget.Plan of a run: a probe of the model (the same network, batch, data and initial weights,
    dropped afterwards) gives the untrained network's kNN (timed: what each evaluation costs) and the step rate;
    the time the probe took to build and trace is reserved again for the model that trains."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ValueError("--time_budget is not supported with several workers yet (each would measure its own "
                         "rate and plan): give --epochs instead")
    started = time.time()
    probe, steps_per_execution = build(config, steps_per_pass)
    build_seconds = time.time() - started
    evaluation_seconds = 0.0
    if knn:
        knn.pixel_baseline()  # before training starts, so that it is spent time, not a surprise
        evaluation_seconds = evaluate_untrained(probe.backbone)
    linear_seconds = 0.0
    if config.linear_probe and knn:  # timed on raw pixels: the larger of the two probes run at the end
        linear_started = time.time()
        knn.pixel_linear_top1()
        linear_seconds = time.time() - linear_started
    rate, first_call = time_budget.measure_steps_per_second(
        probe, dataset_from(0), steps_per_execution, min_seconds=min(20.0, max(2.0, 0.03 * budget)))
    del probe
    gc.collect()
    return time_budget.make_plan(
        budget, time.time() - start_time, rate, steps_per_pass, config.epochs,
        warmup_share=config.warmup_epochs / config.epochs, knn_every=config.knn_every if knn else 0,
        seconds_per_evaluation=evaluation_seconds, reserved_seconds=build_seconds + first_call + linear_seconds)


def _last(values):
    return float(np.mean(values[-1])) if values else None


def load_run(model_dir):
    """(config, encoder config, model with the run's last checkpoint, its epoch: a fraction mid-epoch) of a
    training run."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model_dir={model_dir} holds no config.json: not a tf_simsiam training run")
    with open(path) as f:
        saved = json.load(f)
    enc_config = saved.pop("encoder")
    steps = saved.pop("steps_per_epoch_used")
    config = PretrainConfig(**{k: v for k, v in saved.items() if k in PretrainConfig.__dataclass_fields__})
    config.epochs = saved.get("epochs_used", config.epochs)  # a --time_budget run's planned epochs
    keras.mixed_precision.set_global_policy(distribute.resolve_precision(config.precision))
    model = build_model(config, enc_config, steps)
    model.optimizer.build(model.trainable_variables)
    step = run_dir.restore(model, os.path.join(model_dir, "checkpoints"))
    if not step:
        raise FileNotFoundError(f"--model_dir={model_dir} has no checkpoint yet")
    return config, enc_config, model, step // steps if step % steps == 0 else round(step / steps, 3)


def export_run(model_dir, export_dir=None, formats=None, precision=None):
    """Exports the encoder of a training run from its last checkpoint (python -m tf_simsiam.export), in the
    run's --export_formats and --export_precision unless given."""
    config, enc_config, model, epoch = load_run(model_dir)
    log.info("exporting epoch %s of %s", epoch, model_dir)
    return export.export_encoder(model.backbone, export_dir or os.path.join(model_dir, "export"), enc_config,
                                 formats=formats or config.export_formats,
                                 precision=precision or config.export_precision)


def z_first_component_share(model_dir, batches=8, seed=0):
    """(share, epoch): the mean over `batches` training batches (the run's batch size and augmentations, drawn
    with `seed`) of losses.first_component_share(z) at the run's last checkpoint (that of `epoch`), z computed as
    in the train step, BN on the batch's statistics (where z_std is measured)."""
    config, enc_config, model, epoch = load_run(model_dir)
    dataset = pipeline.pretrain_dataset(load_train(config), config.batch_size,
                                        recipe_of(config, enc_config["input_shape"][0]), seed=seed)
    shares = [float(losses.first_component_share(model.projector(model.backbone(as_float(views[:, 0]),
                                                                                training=True),
                                                                 training=True)))
              for views in dataset.take(batches)]
    return float(np.mean(shares)), epoch
