"""The methods' objectives: SimSiam's (the paper's Algorithm 1, below), SimCLR's NT-Xent, Barlow Twins' and VICReg's.

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


def byol_loss(p1, p2, target_z1, target_z2):
    """BYOL's symmetric loss (Grill et al., 2020, Eq. 2 and its symmetrised sum): the online predictions against
    the target projections of the other view, 2 - 2 cos each, averaged over the batch and summed over the two
    directions (in [0, 8]). The targets get no gradient."""
    target_z1, target_z2 = tf.stop_gradient(target_z1), tf.stop_gradient(target_z2)
    return (2.0 + 2.0 * negative_cosine_similarity(p1, target_z2)) + (
        2.0 + 2.0 * negative_cosine_similarity(p2, target_z1))


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


# --- MoCo v2 --------------------------------------------------------------------------------------------------------

def moco_logits(q, k, queue, temperature=0.2):
    """Logits (n, 1 + K) of MoCo's InfoNCE (He et al., 2020, Eq. 1; Algorithm 1): each l2-normalised query
    against its key (column 0, the positive) and the K keys of the queue (negatives), over `temperature`. The keys
    get no gradient; float32."""
    q = tf.math.l2_normalize(tf.cast(q, tf.float32), axis=-1)
    k = tf.stop_gradient(tf.math.l2_normalize(tf.cast(k, tf.float32), axis=-1))
    positive = tf.reduce_sum(q * k, axis=-1, keepdims=True)
    negative = tf.matmul(q, tf.stop_gradient(tf.cast(queue, tf.float32)), transpose_b=True)
    return tf.concat([positive, negative], axis=1) / temperature


def moco_loss(q, k, queue, temperature=0.2):
    """(loss, accuracy): the cross-entropy of each query picking its key among the key and the queue, averaged
    over the queries, and the fraction that score their key highest."""
    logits = moco_logits(q, k, queue, temperature)
    labels = tf.zeros(tf.shape(logits)[:1], tf.int32)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), 0), tf.float32))
    return loss, accuracy


# --- Barlow Twins and VICReg ----------------------------------------------------------------------------------------

def off_diagonal(matrix):
    """The square matrix with its diagonal set to zero."""
    return matrix - tf.linalg.diag(tf.linalg.diag_part(matrix))


def barlow_twins_loss(z1, z2, lambd=5e-3, eps=1e-5):
    """Barlow Twins (Zbontar et al., 2021, Algorithm 1): (loss, on-diagonal term, off-diagonal term).

        z_norm = (z - z.mean(0)) / z.std(0)          # per dimension, over the batch
        c = z1_norm.T @ z2_norm / N                  # D x D cross-correlation
        loss = sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2

    Normalised as the official code does, with a BN without scale and shift (biased variance, eps 1e-5); the
    pseudo-code's `std` would be PyTorch's unbiased one. Under a distribution strategy the embeddings of every
    replica are gathered (cross_replica_concat), so c is that of the global batch and every replica's loss is the
    global one. Math in float32.
    """
    z1, z2 = (cross_replica_concat(tf.cast(z, tf.float32)) for z in (z1, z2))

    def normalised(z):
        mean, variance = tf.nn.moments(z, axes=[0])
        return (z - mean) * tf.math.rsqrt(variance + eps)

    c = tf.matmul(normalised(z1), normalised(z2), transpose_a=True) / tf.cast(tf.shape(z1)[0], tf.float32)
    on_diagonal = tf.reduce_sum(tf.square(tf.linalg.diag_part(c) - 1.0))
    off_diagonal_term = tf.reduce_sum(tf.square(off_diagonal(c)))
    return on_diagonal + lambd * off_diagonal_term, on_diagonal, off_diagonal_term


def vicreg_loss(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
    """VICReg (Bardes et al., 2022, Algorithm 1): (loss, invariance, variance, covariance).

        invariance = mean((z1 - z2)^2)
        variance   = mean_j relu(1 - sqrt(var(z1_j) + eps)) + the same of z2         (unbiased variance)
        covariance = sum_{i != j} cov(z1)_ij^2 / D + the same of z2                     (cov over N - 1)
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance

    as the paper writes it (the official code halves the variance term). Under a distribution strategy the
    variance and covariance are those of the global batch (the embeddings of every replica gathered, as the
    official code does); the invariance is this replica's mean, whose mean over replicas is the global one.
    Math in float32.
    """
    z1, z2 = tf.cast(z1, tf.float32), tf.cast(z2, tf.float32)
    invariance = tf.reduce_mean(tf.square(z1 - z2))

    def variance_and_covariance(z):
        z = cross_replica_concat(z)
        n, d = tf.cast(tf.shape(z)[0], tf.float32), tf.cast(tf.shape(z)[1], tf.float32)
        z = z - tf.reduce_mean(z, axis=0)
        std = tf.sqrt(tf.reduce_sum(tf.square(z), axis=0) / (n - 1.0) + eps)
        covariance = tf.matmul(z, z, transpose_a=True) / (n - 1.0)
        return tf.reduce_mean(tf.nn.relu(1.0 - std)), tf.reduce_sum(tf.square(off_diagonal(covariance))) / d

    (variance1, covariance1), (variance2, covariance2) = variance_and_covariance(z1), variance_and_covariance(z2)
    variance, covariance = variance1 + variance2, covariance1 + covariance2
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return loss, invariance, variance, covariance
