"""Backbones, heads and the SimSiam model."""

from tf_simsiam.models import backbones, heads
from tf_simsiam.models.simsiam import SimSiam
