"""What a benchmark ran on, for its JSON: CPU model, cores, the instruction-set flags that matter, versions."""

import os
import platform


def describe(cpuinfo="/proc/cpuinfo"):
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    info = {"cpu": model, "cores": os.cpu_count(), "cpu_flags": [f for f in wanted if f in flags],
            "python": platform.python_version()}
    try:
        import keras
        import tensorflow as tf
        info.update(tensorflow=tf.__version__, keras=keras.__version__)
    except ImportError:
        pass
    return info
