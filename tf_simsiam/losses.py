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


def cross_entropy_similarity(p, z):
    """The paper's cross-entropy variant of D (its Table 4): -softmax(z) . log softmax(p), over the channels,
    averaged over the batch."""
    p, z = tf.cast(p, tf.float32), tf.cast(z, tf.float32)
    return -tf.reduce_mean(tf.reduce_sum(tf.nn.softmax(z, axis=-1) * tf.nn.log_softmax(p, axis=-1), axis=-1))


SIMILARITIES = {"cosine": negative_cosine_similarity, "cross_entropy": cross_entropy_similarity}


def simsiam_loss(p1, p2, z1, z2, stop_gradient=True, symmetric=True, similarity="cosine"):
    """The SimSiam loss of two views.

    Args:
      p1: predictor output of view 1, shape (batch, dim).
      p2: predictor output of view 2.
      z1: projector output of view 1, shape (batch, dim).
      z2: projector output of view 2.
      stop_gradient: treat z as a constant (the paper's sg); False is the collapsing ablation (Fig. 2).
      symmetric: D(p1, sg(z2))/2 + D(p2, sg(z1))/2; False keeps only D(p1, sg(z2)) (Table 5).
      similarity: "cosine" (the paper) or "cross_entropy" (Table 4).
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"--similarity must be one of {sorted(SIMILARITIES)}, got {similarity!r}")
    distance = SIMILARITIES[similarity]
    if stop_gradient:
        z1, z2 = tf.stop_gradient(z1), tf.stop_gradient(z2)
    if not symmetric:
        return distance(p1, z2)
    return 0.5 * distance(p1, z2) + 0.5 * distance(p2, z1)


def std_of_l2_normalized(z):
    """The collapse signal: std over the batch of l2-normalised z, averaged over channels.

    About 1/sqrt(dim) for a healthy, spread-out output; 0 when every sample maps to one vector.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))


def first_component_share(z):
    """The share of the l2-normalised z's variance (over the batch) along its first principal direction.

    1 when z lies on one line through its mean: a dimensional collapse, which std_of_l2_normalized misses when
    each channel is batch-normalised without a shift (z = s(x) v, one scalar feature times one direction, has
    z_std about 1/sqrt(dim)); far under 1 for an output spread over many directions. 1 too when z does not vary.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float64), axis=-1)
    z -= tf.reduce_mean(z, axis=0)
    variances = tf.square(tf.linalg.svd(z, compute_uv=False))
    total = tf.reduce_sum(variances)
    return tf.where(total > 0, variances[0] / tf.maximum(total, 1e-300), tf.constant(1.0, tf.float64))


# --- SimCLR -------------------------------------------------------------------------------------------------------

def cross_replica_concat(tensor):
    """The rows of `tensor` from every replica, in replica order (the tensor itself on one replica).

    One all-reduce of the tensor placed in its replica's slot (google-research/simclr's way), so that gradients
    flow back to the replica that computed each row.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    replicas = context.num_replicas_in_sync
    slot = tf.one_hot(context.replica_id_in_sync_group, replicas, dtype=tensor.dtype)
    placed = slot[:, None, None] * tensor[None]
    gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.reshape(gathered, [-1, tf.shape(tensor)[-1]])


def nt_xent_logits(z1, z2, temperature=0.5):
    """Logits (2n, 2N) and positive indices (2n,) of this replica's 2n anchors against all 2N views.

    Anchors are [z1; z2] of this replica (n pairs); candidates are [z1 of all replicas; z2 of all replicas]
    (N pairs in the global batch). An anchor's own entry is masked out, its other view is the positive and the
    2N - 2 remaining views are the negatives. Math in float32 on l2-normalised rows.
    """
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=-1)
    z2 = tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=-1)
    n = tf.shape(z1)[0]
    all1, all2 = cross_replica_concat(z1), cross_replica_concat(z2)
    total = tf.shape(all1)[0]  # N
    context = tf.distribute.get_replica_context()
    replica = context.replica_id_in_sync_group if context is not None else 0
    offset = tf.cast(replica, tf.int32) * n
    anchors = tf.concat([z1, z2], axis=0)
    logits = tf.matmul(anchors, tf.concat([all1, all2], axis=0), transpose_b=True) / temperature
    local = offset + tf.range(n)
    own = tf.concat([local, total + local], axis=0)
    positive = tf.concat([total + local, local], axis=0)
    logits = logits - 1e9 * tf.one_hot(own, 2 * total, dtype=tf.float32)
    return logits, positive


def nt_xent(z1, z2, temperature=0.5):
    """NT-Xent (SimCLR, Eq. 1): the cross-entropy of each of the 2N views picking its positive among the other
    2N - 1, averaged over all 2N anchors (the paper's 1/2N; google-research/simclr sums the two directions, twice
    this). Under a distribution strategy, negatives come from every replica and this is the replica's share.
    """
    logits, positive = nt_xent_logits(z1, z2, temperature)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits))
