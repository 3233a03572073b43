"""Backbones, heads and the two methods: SimSiam and SimCLR."""

from tf_simsiam.models import backbones, heads
from tf_simsiam.models.simclr import SimCLR
from tf_simsiam.models.simsiam import SimSiam

METHODS = ("simsiam", "simclr")  # the methods, by --method name
