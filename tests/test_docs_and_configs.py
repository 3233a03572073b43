"""The README's model.fit example runs as pasted; every config parses and passes validation; every relative link
in the Markdown files points to a file and, with an anchor, to one of its headings."""

import glob
import os
import re
import subprocess
import sys

import pytest

from tf_simsiam import ablations

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


PARSE_VARIANTS = """
from absl import flags
from tf_simsiam import ablations, train
base = ablations.read_flagfile("configs/ablations.cfg")
for suite, variants in ablations.SUITES.items():
    for title, overrides, _, _ in variants:
        flags.FLAGS.unparse_flags()
        extra = [f"--{k}={ablations._text(v)}" for k, v in ablations.resolve(overrides, base).items()]
        flags.FLAGS(["train", "--flagfile=configs/ablations.cfg", *extra])
        train.config_from_flags().validate()
        print(suite, title, extra)
"""


def test_every_ablation_variant_of_the_recipe_validates():
    out = subprocess.run([sys.executable, "-c", PARSE_VARIANTS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("\n") == sum(len(variants) for variants in ablations.SUITES.values())


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prose(path):
    """A Markdown file's text outside its code blocks."""
    with open(os.path.join(ROOT, path)) as f:
        return re.sub(r"```.*?```", "", f.read(), flags=re.S)


def anchors(path):
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", prose(path), re.M)}


MARKDOWN = ["README.md", os.path.join("export", "README.md"), os.path.join("docs", "ablations.md")]


@pytest.mark.parametrize("name", MARKDOWN)
def test_every_relative_link_points_to_a_file_and_one_of_its_headings(name):
    broken, headings = [], {}
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]+))?\)", prose(name)):
        path = os.path.normpath(os.path.join(os.path.dirname(name), target)) if target else name
        if not os.path.exists(os.path.join(ROOT, path)):
            broken.append(f"{target}: no such file")
        elif anchor:
            if path not in headings:
                headings[path] = anchors(path)  # each file read once
            if anchor not in headings[path]:
                broken.append(f"{target}#{anchor}: no such heading in {path}")
    assert not broken, f"{name}: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Top\n[ok](#top) [ok](docs/a.md#part) [bad](docs/a.md#gone) [bad](b.md)\n")
    (tmp_path / "docs" / "a.md").write_text("## Part\n[ok](../README.md#top) [bad](#top)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    with pytest.raises(AssertionError, match=r"docs/a.md#gone.*b.md: no such file"):
        test_every_relative_link_points_to_a_file_and_one_of_its_headings("README.md")
    with pytest.raises(AssertionError, match=r"#top: no such heading in docs/a.md"):
        test_every_relative_link_points_to_a_file_and_one_of_its_headings(os.path.join("docs", "a.md"))
