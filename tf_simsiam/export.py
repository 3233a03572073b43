"""Export of the frozen encoder (backbone only: no projector, no predictor) for downstream work.

    EXPORT_DIR/saved_model/      SavedModel; its default signature `serving_default` (also `serve`) takes uint8
                                 images (N, H, W, C) and returns features (N, D) float32, preprocessing inside.
                                 Loads with TensorFlow alone: tf.saved_model.load or keras.layers.TFSMLayer.
    EXPORT_DIR/encoder.weights.h5  the backbone's Keras weights, for fine-tuning
    EXPORT_DIR/encoder.json        what rebuilds it: tf_simsiam.export.load_encoder(EXPORT_DIR)

On demand:  python -m tf_simsiam.export --model_dir=RUN --export_dir=DIR   (from the run's last checkpoint)
The export is written beside the target and renamed into place, so a failure leaves an earlier export intact.
"""

import json
import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf

from tf_simsiam.models import backbones


def export_encoder(backbone, export_dir, encoder_config):
    """Writes the SavedModel, weights and config of `backbone` into export_dir (replacing an earlier export).

    encoder_config: keyword arguments of tf_simsiam.backbones.get that rebuild this backbone
    (name, input_shape, width, mean, std).
    """
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}-", dir=parent)
    try:
        height, width, channels = backbone.input_shape[1:]

        def serve(images):
            features = backbone(tf.cast(images, tf.float32) / 255.0, training=False)
            return tf.cast(features, tf.float32)

        archive = keras.export.ExportArchive()
        archive.track(backbone)
        archive.add_endpoint("serve", serve, input_signature=[
            tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")])
        archive.write_out(os.path.join(staging, "saved_model"), verbose=False)
        backbone.save_weights(os.path.join(staging, "encoder.weights.h5"))
        config = {**encoder_config, "input_shape": [height, width, channels],
                  "feature_dim": int(backbone.output_shape[-1]), "input_dtype": "uint8"}
        with open(os.path.join(staging, "encoder.json"), "w") as f:
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
    with open(os.path.join(export_dir, "encoder.json")) as f:
        config = json.load(f)
    backbone = backbones.from_encoder_config(config)
    backbone.load_weights(os.path.join(export_dir, "encoder.weights.h5"))
    return backbone


def main(argv):
    from absl import flags

    from tf_simsiam import pretrain
    FLAGS = flags.FLAGS
    try:
        path = pretrain.export_run(FLAGS.model_dir, FLAGS.export_dir)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"exported the encoder of {FLAGS.model_dir} to {path}")


def define_flags():
    """The CLI's flags, defined only when the CLI runs (the library module defines none on import)."""
    from absl import flags
    flags.DEFINE_string("model_dir", None, "The training run to export (holds config.json and checkpoints/).")
    flags.DEFINE_string("export_dir", None, "Where to write the export; default MODEL_DIR/export.")
    flags.mark_flag_as_required("model_dir")


def run():
    from absl import app
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
