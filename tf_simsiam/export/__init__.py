"""Export of the frozen encoder (backbone only: no projector, no predictor) for downstream work.

    EXPORT_DIR/saved_model/      SavedModel; its default signature `serving_default` (also `serve`) takes uint8
                                 images (N, H, W, C) and returns features (N, D) float32, preprocessing inside.
                                 Loads with TensorFlow alone: tf.saved_model.load or keras.layers.TFSMLayer.
    EXPORT_DIR/encoder.onnx      on request (formats "onnx"): the same function for ONNX Runtime (tf2onnx)
    EXPORT_DIR/encoder.tflite    on request (formats "litert"): the same function for LiteRT
    EXPORT_DIR/encoder.weights.h5  the backbone's Keras weights, for fine-tuning
    EXPORT_DIR/encoder.json        what rebuilds it (tf_simsiam.export.load_encoder), its precision and files

The encoder is rebuilt in the export's precision (float32 unless asked otherwise), whatever the training's: an
encoder trained under mixed_bfloat16 exports float32 variables and float32 compute, so its features are those of
a float32 network and run at full speed on hardware without native bfloat16. The converters of ONNX and LiteRT
come with the `export` extra (pip install "tf_simsiam[export]").

On demand:  python -m tf_simsiam.export --model_dir=RUN --export_dir=DIR   (from the run's last checkpoint; the
command is tf_simsiam/export/__main__.py: this library imports no training code)
The export is written beside the target and renamed into place, so a failure leaves an earlier export intact.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tf_simsiam.models import backbones

FORMATS = ("saved_model", "onnx", "litert")  # the SavedModel is always written: the others are converted from it
FILES = {"saved_model": "saved_model", "onnx": "encoder.onnx", "litert": "encoder.tflite"}
WEIGHTS_FILE, CONFIG_FILE = "encoder.weights.h5", "encoder.json"  # the Keras backbone and what rebuilds it
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
ONNX_OPSET = 17


def parse_formats(formats):
    """("saved_model", ...) from "saved_model,onnx" or a sequence; the SavedModel always comes first."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise ValueError(f"--export_formats: unknown format(s) {unknown}; choose from {FORMATS}")
    return ("saved_model",) + tuple(f for f in FORMATS[1:] if f in names)


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy set to `name` inside the block, restored after it."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def rebuilt(backbone, encoder_config, precision="float32"):
    """The backbone rebuilt from its config in `precision`, per-replica BN, with backbone's weights."""
    if precision not in PRECISIONS:
        raise ValueError(f"--export_precision must be one of {PRECISIONS}, got {precision!r}")
    with dtype_policy(precision):
        encoder = backbones.from_encoder_config({**encoder_config, "input_shape": backbone.input_shape[1:]},
                                                sync_bn=False)
    encoder.set_weights(backbone.get_weights())
    return encoder


def _write_onnx(saved_model, path):
    try:
        import tf2onnx
        from tf2onnx import tf_loader
    except ImportError:
        raise ValueError('--export_formats=onnx needs tf2onnx: pip install "tf_simsiam[export]"') from None
    graph_def, inputs, outputs, _, names = tf_loader.from_saved_model(
        saved_model, None, None, signatures=["serving_default"], return_initialized_tables=True,
        return_tensors_to_rename=True)
    # the signature's names ("images" -> "output_0"), as the SavedModel's
    tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=ONNX_OPSET,
                                   tensors_to_rename=names, output_path=path)


def _write_litert(saved_model, path):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serving_default"])
    with open(path, "wb") as f:
        f.write(converter.convert())


def export_encoder(backbone, export_dir, encoder_config, formats=("saved_model",), precision="float32"):
    """Writes the SavedModel (and the other `formats`), weights and config of `backbone` into export_dir
    (replacing an earlier export), computed in `precision` (float32 by default, whatever the training's).

    encoder_config: keyword arguments of tf_simsiam.backbones.get that rebuild this backbone
    (name, input_shape, width, mean, std).
    """
    formats = parse_formats(formats)
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}-", dir=parent)
    try:
        encoder = rebuilt(backbone, encoder_config, precision)
        height, width, channels = encoder.input_shape[1:]

        def serve(images):
            features = encoder(tf.cast(images, tf.float32) / 255.0, training=False)
            return tf.cast(features, tf.float32)

        archive = keras.export.ExportArchive()
        archive.track(encoder)
        archive.add_endpoint("serve", serve, input_signature=[
            tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")])
        saved_model = os.path.join(staging, FILES["saved_model"])
        archive.write_out(saved_model, verbose=False)
        if "onnx" in formats:
            _write_onnx(saved_model, os.path.join(staging, FILES["onnx"]))
        if "litert" in formats:
            _write_litert(saved_model, os.path.join(staging, FILES["litert"]))
        encoder.save_weights(os.path.join(staging, WEIGHTS_FILE))
        config = {**encoder_config, "input_shape": [height, width, channels],
                  "feature_dim": int(encoder.output_shape[-1]), "input_dtype": "uint8", "precision": precision,
                  "files": {f: FILES[f] for f in formats}}
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=1)
        if os.path.exists(export_dir):
            old = f"{staging}-old"
            os.replace(export_dir, old)
            os.replace(staging, export_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir


def load_encoder(export_dir):
    """The exported backbone as a trainable Keras model (for fine-tuning), rebuilt with tf_simsiam."""
    with open(os.path.join(export_dir, CONFIG_FILE)) as f:
        config = json.load(f)
    backbone = backbones.from_encoder_config(config)
    backbone.load_weights(os.path.join(export_dir, WEIGHTS_FILE))
    return backbone
