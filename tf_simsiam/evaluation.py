"""Evaluation of frozen features: the weighted kNN classifier used by the monitors and the evaluate tool."""

import numpy as np
import tensorflow as tf

from tf_simsiam.data.pipeline import image_batches


def extract_features(encoder, images, batch_size=512):
    """Features (N, D) float32 of uint8 images (N, H, W, C) from a Keras encoder in inference mode."""
    return np.asarray(encoder.predict(image_batches(images, batch_size), verbose=0), dtype=np.float32)


def knn_classify(train_features, train_labels, test_features, num_classes, k=200, temperature=0.1,
                 chunk_size=1024):
    """Weighted kNN on cosine similarity (Wu et al. 2018, as in the SimSiam/MoCo monitors).

    Each of the k nearest training features votes for its label with weight exp(similarity / temperature);
    temperature=None gives plain majority votes. Returns the predicted labels of the test features.
    """
    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    one_hot = tf.one_hot(tf.constant(train_labels), num_classes)
    k = min(k, len(train_features))
    predictions = []
    for start in range(0, len(test_features), chunk_size):
        test = tf.math.l2_normalize(tf.constant(test_features[start:start + chunk_size], tf.float32), axis=1)
        similarity, index = tf.math.top_k(tf.matmul(test, train, transpose_b=True), k=k)
        weights = tf.ones_like(similarity) if temperature is None else tf.exp(similarity / temperature)
        votes = tf.reduce_sum(tf.gather(one_hot, index) * weights[..., None], axis=1)
        predictions.append(tf.argmax(votes, axis=1).numpy())
    return np.concatenate(predictions)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=200, temperature=0.1):
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_classify(train_features, train_labels, test_features, num_classes, k, temperature)
    return float(np.mean(predicted == test_labels))


def pixel_features(images):
    """Raw pixels as features (the baseline every representation must beat)."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0
