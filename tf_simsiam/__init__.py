"""tf_simsiam: SimSiam, SimCLR, BYOL, MoCo v2, Barlow Twins and VICReg self-supervised representation learning in
TensorFlow 2 / Keras 3."""

try:
    import tensorflow  # noqa: F401
except ModuleNotFoundError as error:  # tensorflow is an extra, so that CPU and GPU users pick their build
    raise ModuleNotFoundError(
        "tf_simsiam needs TensorFlow: pip install 'tf_simsiam[cpu]' (tensorflow-cpu) or "
        "'tf_simsiam[gpu]' (tensorflow[and-cuda]), or install a TensorFlow >= 2.21 build of your own") from error

from tf_simsiam import data, distribute, losses, optim
from tf_simsiam.models import BYOL, BarlowTwins, MoCoV2, SimCLR, SimSiam, VICReg, backbones, heads

__version__ = "0.2.0"
__all__ = ["BYOL", "BarlowTwins", "MoCoV2", "SimCLR", "SimSiam", "VICReg", "backbones", "data", "distribute", "heads",
           "losses", "optim"]
