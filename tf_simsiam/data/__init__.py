"""Data sources, the papers' augmentations and the pretraining input pipeline."""

from tf_simsiam.data import augment
from tf_simsiam.data.pipeline import image_batches, pretrain_dataset
from tf_simsiam.data.sources import DataError, Split, Stream, fashion_mnist, folder, from_arrays, load, read_idx
