"""Ships a training run's encoder with the package: python scripts/ship_pretrained.py --model_dir=RUN --name=NAME

Exports the run's last checkpoint (float32, SavedModel) into tf_simsiam/pretrained/NAME, replacing what was there,
with pretrained.json: the run (its flags, the epoch exported, the commit) and the features of
tf_simsiam.pretrained.check_images as computed by the exported SavedModel, which tests/test_pretrained.py checks a
fresh load against. Refuses an export above the package's size limit.
"""

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from absl import app, flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_BYTES = 10 * 2**20  # what one shipped encoder may add to the package

flags.DEFINE_string("model_dir", None, "The training run (config.json, checkpoints/).")
flags.DEFINE_string("name", None, "The shipped encoder's name, one of tf_simsiam.pretrained.NAMES.")
flags.mark_flags_as_required(["model_dir", "name"])
FLAGS = flags.FLAGS


def size_of(directory):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)


def main(argv):
    del argv
    import tensorflow as tf

    from tf_simsiam import export, pretrain, pretrained
    if FLAGS.name not in pretrained.NAMES:
        sys.exit(f"error: --name={FLAGS.name}: add it to tf_simsiam.pretrained.NAMES first ({pretrained.NAMES})")
    target = os.path.join(ROOT, "tf_simsiam", "pretrained", FLAGS.name)
    staging = tempfile.mkdtemp(prefix=f".{FLAGS.name}-", dir=os.path.dirname(target))
    try:
        config, enc_config, model, epoch = pretrain.load_run(FLAGS.model_dir)
        export.export_encoder(model.backbone, staging, enc_config, formats=("saved_model",), precision="float32")
        encoder = tf.saved_model.load(os.path.join(staging, export.FILES["saved_model"]))
        images = pretrained.check_images(enc_config["input_shape"])
        features = encoder.serve(tf.constant(images)).numpy()
        with open(os.path.join(FLAGS.model_dir, "flags.cfg")) as f:
            run_flags = [line.strip() for line in f if line.startswith("--") and not line.startswith("--model_dir")]
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        info = {"name": FLAGS.name, "epoch": epoch, "epochs_planned": config.epochs, "flags": run_flags,
                "commit": commit, "date": datetime.date.today().isoformat(), "tensorflow": tf.__version__,
                "check": {"images": "tf_simsiam.pretrained.check_images(input_shape)",
                          "features": [[round(float(v), 6) for v in row] for row in features]}}
        with open(os.path.join(staging, pretrained.INFO_FILE), "w") as f:
            json.dump(info, f, indent=1)
        size = size_of(staging)
        if size > MAX_BYTES:
            sys.exit(f"error: the export of {FLAGS.model_dir} takes {size / 2**20:.1f} MB, above the "
                     f"{MAX_BYTES / 2**20:.0f} MB a shipped encoder may take")
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"shipped epoch {epoch} of {FLAGS.model_dir} as pretrained:{FLAGS.name} ({size / 2**20:.1f} MB, {target})")


if __name__ == "__main__":
    app.run(main)
