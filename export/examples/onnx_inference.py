"""Features from an exported tf_simsiam encoder with ONNX Runtime alone (no TensorFlow, no tf_simsiam import).

    python -m tf_simsiam.train --flagfile=configs/fashion_mnist.cfg --export_formats=saved_model,onnx
    python export/examples/onnx_inference.py --export_dir=runs/fashion_mnist/export

The ONNX encoder takes uint8 images (N, H, W, C), as the SavedModel does, and returns float32 features (N, D).
This script encodes Fashion-MNIST test images and classifies each by its nearest training image (cosine), to show
the features are usable as they come.
"""

import argparse
import gzip
import json
import os

import numpy as np
import onnxruntime

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


def fashion_mnist(split, count):
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FASHION_MNIST, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(FASHION_MNIST, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images[:count], labels[:count]


def encode(session, images, batch_size=256):
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", default="runs/fashion_mnist/export")
    parser.add_argument("--train_size", type=int, default=5000)
    parser.add_argument("--test_size", type=int, default=1000)
    args = parser.parse_args()
    with open(os.path.join(args.export_dir, "encoder.json")) as f:
        encoder = json.load(f)
    if "onnx" not in encoder.get("files", {}):
        raise SystemExit(f"{args.export_dir} has no ONNX encoder: export with --export_formats=saved_model,onnx")
    session = onnxruntime.InferenceSession(os.path.join(args.export_dir, encoder["files"]["onnx"]),
                                           providers=["CPUExecutionProvider"])
    (x_train, y_train), (x_test, y_test) = fashion_mnist("train", args.train_size), fashion_mnist("test",
                                                                                                 args.test_size)
    train, test = encode(session, x_train), encode(session, x_test)
    print(f"features: {test.shape[1]} per image ({encoder['precision']} encoder, input {encoder['input_shape']})")
    train /= np.linalg.norm(train, axis=1, keepdims=True) + 1e-12
    test /= np.linalg.norm(test, axis=1, keepdims=True) + 1e-12
    nearest = np.argmax(test @ train.T, axis=1)
    print(f"1-nearest-neighbour top-1 on {len(test)} test images: {100 * np.mean(y_train[nearest] == y_test):.2f}%")


if __name__ == "__main__":
    main()
