"""Fine-tune an exported tf_simsiam encoder on a fraction of the Fashion-MNIST labels, with Keras `fit`.

    python export/examples/fine_tune.py --export_dir=runs/fashion_mnist/export --label_fraction=0.1

The backbone is rebuilt from the export's `encoder.weights.h5` and `encoder.json` (tf_simsiam.export.load_encoder:
a trainable Keras model, float images in [0, 1]); a linear softmax layer goes on top and the whole network is
trained with SGD + Nesterov momentum at a small learning rate (SimCLR's fine-tuning), then evaluated and saved.
"""

import argparse
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from linear_probe import fashion_mnist  # noqa: E402

from tf_simsiam.export import load_encoder  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", default="runs/fashion_mnist/export")
    parser.add_argument("--label_fraction", type=float, default=0.1, help="class-balanced share of the labels")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate at batch 256")
    parser.add_argument("--test_size", type=int, default=10000)
    parser.add_argument("--output", default="fine_tuned.keras")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = fashion_mnist("train"), fashion_mnist("test")
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_train == c), max(1, round(args.label_fraction * np.sum(
        y_train == c))), replace=False) for c in range(10)])
    x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = x_test[:args.test_size], y_test[:args.test_size]

    backbone = load_encoder(args.export_dir)  # trainable; BN learns from the new batches
    images = keras.Input(x_train.shape[1:], dtype="uint8", name="images")
    features = backbone(keras.layers.Rescaling(1 / 255)(images))
    outputs = keras.layers.Dense(10, activation="softmax", dtype="float32",
                                 kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01))(features)
    classifier = keras.Model(images, outputs)
    batch_size = min(256, len(x_train))
    steps = args.epochs * (len(x_train) // batch_size)
    lr = keras.optimizers.schedules.CosineDecay(args.lr * batch_size / 256, steps)
    classifier.compile(keras.optimizers.SGD(lr, momentum=0.9, nesterov=True), "sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    classifier.fit(x_train, y_train, batch_size=batch_size, epochs=args.epochs, verbose=2, shuffle=True)
    _, accuracy = classifier.evaluate(x_test, y_test, batch_size=512, verbose=0)
    print(f"fine-tuned on {len(x_train)} labelled images: test accuracy {100 * accuracy:.2f}%")
    classifier.save(args.output)


if __name__ == "__main__":
    main()
