"""Distribution strategies for pretraining: one device, several GPUs, several machines or a TPU.

    strategy = tf_simsiam.distribute.get_strategy("mirrored")     # or "auto", "multi_worker", "tpu"
    with strategy.scope():
        model = tf_simsiam.SimSiam(backbone, ...)    # backbone built here too: SyncBN ("auto") with >1 replica
        model.compile(optimizer=tf_simsiam.optim.simsiam_optimizer(...))
    model.fit(tf_simsiam.distribute.distribute_dataset(strategy, dataset_fn), ...)

The batch size is always the global one. SimSiam.train_step scales each replica's loss by 1/replicas, and the
gradients are summed over replicas, so one update equals the single-device update on the same global batch;
with SyncBN the BN moments are those of the global batch too (tests/test_distribute.py checks both).

Create the strategy first, before any other TensorFlow op: logical CPU devices and the collective ops of
MultiWorkerMirroredStrategy can only be configured before TensorFlow's runtime starts.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute bfloat16 natively

_created = {}  # one instance per kind and process: the collective keys of two instances would collide


def configure_cpu_devices(count):
    """Splits the CPU into `count` logical devices (to try several replicas on one machine)."""
    cpus = tf.config.list_physical_devices("CPU")
    wanted = [tf.config.LogicalDeviceConfiguration()] * count
    if tf.config.get_logical_device_configuration(cpus[0]) == (wanted if count > 1 else None):
        return
    try:
        tf.config.set_logical_device_configuration(cpus[0], wanted)
    except RuntimeError as error:
        raise ValueError(f"--num_cpu_devices={count}: TensorFlow has already started; set it before any "
                         f"TensorFlow op ({error})") from None


def _tf_config_workers():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def get_strategy(name="auto", tpu="", num_cpu_devices=0):
    """A tf.distribute.Strategy by name.

    Args:
      name: "auto" (a TPU if `tpu` is given, MultiWorkerMirroredStrategy if TF_CONFIG names several tasks,
        MirroredStrategy if there are several GPUs or `num_cpu_devices` > 1, else the default strategy),
        "default" (one device), "mirrored" (all local GPUs, else all logical CPUs), "multi_worker" (TF_CONFIG)
        or "tpu".
      tpu: the TPU's name or grpc:// address ("local" on a TPU VM); "" lets the resolver find it (TPU_NAME).
      num_cpu_devices: if > 1, split the CPU into that many logical devices first.

    The same arguments give the same strategy object again, within one process.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    if num_cpu_devices > 1:
        configure_cpu_devices(num_cpu_devices)
    if name == "auto":
        if tpu:
            name = "tpu"
        elif _tf_config_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1 or num_cpu_devices > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    key = (name, tpu)
    if key not in _created:
        _created[key] = _create(name, tpu)
    return _created[key]


def _create(name, tpu):
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        if _tf_config_workers() == 0:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable describing the "
                             "cluster and this task (see docs/scaling-out.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def _tpu_strategy(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(f"--strategy=tpu: no TPU found at --tpu={tpu!r}: {error}") from None
    return tf.distribute.TPUStrategy(resolver)


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def is_tpu(strategy):
    return isinstance(strategy, tf.distribute.TPUStrategy)


def task(strategy):
    """(task_type, task_id) of this process; (None, 0) outside a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def is_chief(strategy):
    """True for the one process that writes checkpoints, logs and exports."""
    task_type, task_id = task(strategy)
    if task_type in (None, "chief"):
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def distribute_dataset(strategy, dataset_fn):
    """dataset_fn(input_context or None) -> tf.data.Dataset of per-replica batches, distributed for fit.

    With one replica the dataset is returned as it is. Otherwise each input pipeline (one per worker or TPU
    host) calls dataset_fn with its tf.distribute.InputContext and yields, step after step, the batches of its
    local replicas in replica order (see data.pipeline.pretrain_dataset).
    """
    if strategy.num_replicas_in_sync == 1:
        return dataset_fn(None)
    return strategy.distribute_datasets_from_function(dataset_fn)


JIT_COMPILE = ("auto", "true", "false")
STEPS_PER_EXECUTION_AUTO = {"tpu": 128, "gpu": 16, "cpu": 1}  # capped at the steps of an epoch


def device_kind(strategy):
    """"tpu", "gpu" or "cpu": what the strategy's replicas run on."""
    if is_tpu(strategy):
        return "tpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def resolve_jit_compile(setting, strategy):
    """Whether the train step is compiled with XLA. "auto": on for one GPU or a TPU; off on CPUs (slower there on
    the machines measured, see the benchmarks page), with several CPU replicas (where it fails: TensorFlow places
    one replica's variables on another's device) and with several GPUs (not run here)."""
    if setting not in JIT_COMPILE:
        raise ValueError(f"--jit_compile must be one of {JIT_COMPILE}, got {setting!r}")
    kind = device_kind(strategy)
    if setting == "auto":
        return kind == "tpu" or (kind == "gpu" and strategy.num_replicas_in_sync == 1)
    if setting == "true" and kind == "cpu" and strategy.num_replicas_in_sync > 1:
        raise ValueError("--jit_compile=true does not work with several CPU replicas (TensorFlow places the "
                         "variables of one replica on another's device); leave it at auto or false on CPU")
    return setting == "true"


def resolve_steps_per_execution(setting, strategy, steps_per_epoch):
    """Train steps per compiled call: an integer as given; "auto": 128 on a TPU, 16 on GPUs, 1 on CPUs (where the
    host round trip costs nothing measurable), never more than the steps of an epoch."""
    if setting == "auto":
        return max(1, min(STEPS_PER_EXECUTION_AUTO[device_kind(strategy)], steps_per_epoch))
    try:
        steps = int(setting)
    except (TypeError, ValueError):
        steps = 0
    if steps <= 0 or str(setting).strip() != str(steps):
        raise ValueError(f"--steps_per_execution must be 'auto' or a positive integer, got {setting!r}")
    return steps


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Without them TensorFlow emulates
    bfloat16 and `mixed_bfloat16` is several times slower than float32 (5.7x
    in the train step on a 2-core AVX2 machine)."""
    try:
        with open(cpuinfo) as f:
            flags = {word for line in f if line.startswith("flags") for word in line.split()}
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_precision(precision, strategy=None, cpuinfo="/proc/cpuinfo"):
    """The Keras dtype policy for `precision`; "auto" means mixed_bfloat16 where the hardware computes bfloat16
    natively (a TPU, an NVIDIA GPU of compute capability 8.0 or newer, a CPU with AVX512-BF16 or AMX), else
    float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if strategy is not None and is_tpu(strategy):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if tuple(capability) >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"
