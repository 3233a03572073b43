"""The README's model.fit example runs as pasted; every config parses and passes validation; every relative link
in the Markdown files points to a file and, with an anchor, to one of its headings; the documentation site builds
strictly; the CLI reference is what the flags say; the README stays a front door."""

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
    match = re.search(rf"<!-- --8<-- \[start:{marker}\] -->\s*```python\n(.*?)```", text, re.S)
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


SKIP_DIRS = {".git", ".venv", ".ci-venv", "site", "runs", "node_modules", ".pytest_cache"}


def markdown_files(root=ROOT):
    """Every *.md file of the repository (not those of virtual environments, build output or runs)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(".venv"))
        found += [os.path.relpath(os.path.join(folder, f), root) for f in sorted(files) if f.endswith(".md")]
    return found


MARKDOWN = markdown_files()


def test_the_link_check_reads_every_markdown_file():
    assert {"README.md", "CHANGELOG.md", "CONTRIBUTING.md", os.path.join("export", "README.md"),
            os.path.join("docs", "index.md"), os.path.join("docs", "results.md")} <= set(MARKDOWN)


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


def test_readme_is_a_front_door():
    size = os.path.getsize(os.path.join(ROOT, "README.md"))
    assert size <= 12_000, f"README.md is {size} bytes; the limit is 12,000: move detail to docs/"


def test_cli_reference_is_what_the_flags_say():
    out = subprocess.run([sys.executable, os.path.join("scripts", "cli_reference.py"), "--check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_the_cli_reference_check_sees_a_changed_page(tmp_path):
    page = tmp_path / "cli.md"
    with open(os.path.join(ROOT, "docs", "reference", "cli.md")) as f:
        page.write_text(f.read().replace("| `--seed` |", "| `--seed_renamed` |", 1))
    out = subprocess.run([sys.executable, os.path.join("scripts", "cli_reference.py"), "--check",
                          f"--output={page}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "out of date" in out.stderr


def test_documentation_site_builds_strictly(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the docs extra is not installed: pip install -e '.[docs]'")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    for page in ("index.html", "reference/cli/index.html", "reference/api/index.html", "results/index.html"):
        assert (tmp_path / "site" / page).exists(), page
    with open(tmp_path / "site" / "reference" / "api" / "index.html") as f:
        api = f.read()
    assert "negative_cosine_similarity" in api and "SimSiam" in api  # the docstrings were rendered
