"""Backbones, heads and the methods: SimSiam, SimCLR, BYOL, MoCo v2, Barlow Twins and VICReg."""

from tf_simsiam.models import backbones, heads
from tf_simsiam.models.barlow_twins import BarlowTwins
from tf_simsiam.models.byol import BYOL
from tf_simsiam.models.mocov2 import MoCoV2
from tf_simsiam.models.simclr import SimCLR
from tf_simsiam.models.simsiam import SimSiam
from tf_simsiam.models.vicreg import VICReg

METHODS = ("simsiam", "simclr", "byol", "mocov2", "barlow", "vicreg")  # the methods, by --method name
