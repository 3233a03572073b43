"""The README's model.fit example runs as pasted; every config parses and passes validation."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_FASHION_MNIST = os.path.exists("/usr/share/datasets/fashion-mnist") or os.environ.get("TF_SIMSIAM_DATA_DIR")


def readme_example(marker):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    match = re.search(rf"<!-- example: {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no example '{marker}' in README.md"
    return match.group(1)


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason="Fashion-MNIST is not installed")
def test_readme_fit_example_runs_as_pasted(tmp_path):
    out = subprocess.run([sys.executable, "-c", readme_example("fit")], cwd=str(tmp_path), capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(8, 128)" in out.stdout and (tmp_path / "simsiam.keras").exists()


PARSE_CONFIG = """
import sys
from absl import flags
from tf_simsiam import train
flags.FLAGS(["train", "--flagfile=" + sys.argv[1]])
config = train.config_from_flags()
config.validate()
print(config.dataset, config.epochs)
"""


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg"))),
                         ids=os.path.basename)
def test_config_parses_and_validates(path):
    out = subprocess.run([sys.executable, "-c", PARSE_CONFIG, path], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
