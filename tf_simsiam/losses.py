"""The SimSiam objective (the paper's Algorithm 1).

    D(p, z) = -<p / ||p||, z / ||z||>            (negative cosine similarity)
    L       = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2

All math is done in float32, also when the model runs under a mixed-precision policy.
"""

import tensorflow as tf


def negative_cosine_similarity(p, z):
    """D(p, z): the negative cosine similarity of each row pair, averaged over the batch.

    Lies in [-1, 1]; -1 when every p points the same way as its z.
    """
    p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=-1)
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(p * z, axis=-1))


def simsiam_loss(p1, p2, z1, z2, stop_gradient=True, symmetric=True):
    """The SimSiam loss of two views.

    Args:
      p1, p2: predictor outputs of view 1 and view 2, shape (batch, dim).
      z1, z2: projector outputs of view 1 and view 2, shape (batch, dim).
      stop_gradient: treat z as a constant (the paper's sg); False is the collapsing ablation (Fig. 2).
      symmetric: D(p1, sg(z2))/2 + D(p2, sg(z1))/2; False keeps only D(p1, sg(z2)) (Table 5).
    """
    if stop_gradient:
        z1, z2 = tf.stop_gradient(z1), tf.stop_gradient(z2)
    if not symmetric:
        return negative_cosine_similarity(p1, z2)
    return 0.5 * negative_cosine_similarity(p1, z2) + 0.5 * negative_cosine_similarity(p2, z1)


def std_of_l2_normalized(z):
    """The collapse signal: std over the batch of l2-normalised z, averaged over channels.

    About 1/sqrt(dim) for a healthy, spread-out output; 0 when every sample maps to one vector.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
