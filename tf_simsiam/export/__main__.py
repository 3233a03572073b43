"""python -m tf_simsiam.export --model_dir=RUN [--export_dir=DIR]: exports a training run's encoder from its last
checkpoint (the command; the library is tf_simsiam.export)."""

import sys

from tf_simsiam.export import FORMATS, PRECISIONS


def main(argv):
    from absl import flags

    from tf_simsiam import pretrain  # the training code: only the command needs it
    FLAGS = flags.FLAGS
    try:
        path = pretrain.export_run(FLAGS.model_dir, FLAGS.export_dir, FLAGS.export_formats, FLAGS.export_precision)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"exported the encoder of {FLAGS.model_dir} to {path}")


def define_flags():
    """The CLI's flags, defined only when the CLI runs (the library module defines none on import)."""
    from absl import flags
    flags.DEFINE_string("model_dir", None, "The training run to export (holds config.json and checkpoints/).")
    flags.DEFINE_string("export_dir", None, "Where to write the export; default MODEL_DIR/export.")
    flags.DEFINE_string("export_formats", None, f"Comma-separated formats from {', '.join(FORMATS)} (the "
                        f"SavedModel is always written); default: the run's --export_formats.")
    flags.DEFINE_enum("export_precision", None, list(PRECISIONS), "The exported encoder's precision; default: the "
                      "run's --export_precision (float32 unless it said otherwise).")
    flags.mark_flag_as_required("model_dir")


def run():
    from absl import app
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
