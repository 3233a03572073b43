"""Train a linear classifier on a frozen tf_simsiam encoder, with plain TensorFlow/Keras (no tf_simsiam import).

    python export/examples/linear_probe.py --saved_model=runs/fashion_mnist/export/saved_model

The SavedModel goes into a Keras classifier through keras.layers.TFSMLayer (frozen); its features are computed
once, a softmax layer is trained on them, and the assembled classifier (uint8 images -> class probabilities)
is evaluated on the test images and saved.
"""

import argparse
import gzip
import os

import keras
import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


def fashion_mnist(split):
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FASHION_MNIST, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(FASHION_MNIST, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved_model", default="runs/fashion_mnist/export/saved_model")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train_size", type=int, default=60000, help="first N training images (a quick try)")
    parser.add_argument("--output", default="linear_probe.keras")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = fashion_mnist("train"), fashion_mnist("test")
    x_train, y_train = x_train[:args.train_size], y_train[:args.train_size]
    images = keras.Input(x_train.shape[1:], dtype="uint8", name="images")
    encoder = keras.Model(images, keras.layers.TFSMLayer(args.saved_model, call_endpoint="serve")(images))
    train_features = encoder.predict(x_train, batch_size=512, verbose=0)
    test_features = encoder.predict(x_test, batch_size=512, verbose=0)

    # standardised features -> softmax: the linear probe
    head = keras.Sequential([keras.Input(train_features.shape[1:]), keras.layers.Normalization(),
                             keras.layers.Dense(10, activation="softmax")])
    head.layers[0].adapt(train_features)
    head.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    head.fit(train_features, y_train, batch_size=256, epochs=args.epochs, verbose=2)

    classifier = keras.Model(images, head(encoder(images)))  # uint8 images -> class probabilities
    _, accuracy = head.evaluate(test_features, y_test, verbose=0)
    check = np.mean(np.argmax(classifier.predict(x_test[:512], verbose=0), 1) == y_test[:512])
    print(f"linear probe on the frozen encoder: test accuracy {100 * accuracy:.2f}% "
          f"(assembled classifier on the first 512 test images: {100 * check:.2f}%)")
    classifier.save(args.output)


if __name__ == "__main__":
    main()
