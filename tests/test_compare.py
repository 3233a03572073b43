"""The comparison command: its budget and recipes checked by name, each method trained once on the same settings,
the table, JSON and plots, a re-run that trains nothing."""

import json
import os
import subprocess
import sys

import pytest

from tf_simsiam import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_budget_in_steps_or_wall_time_and_bad_ones_named():
    assert compare.parse_budget("12", 3) == ["--epochs=3", "--steps_per_epoch=4", "--time_budget="]
    assert compare.parse_budget("10m", 5) == ["--time_budget=10m"]
    for bad in ("2", "ten minutes", "-5m"):
        with pytest.raises(ValueError, match="--budget"):
            compare.parse_budget(bad, 3)


def test_every_method_has_a_recipe_that_shares_data_backbone_and_seed():
    paths = compare.recipes(list(compare.METHODS), [])
    settings = {m: compare.settings_of(m, p, [], ["--time_budget=1m"])[0] for m, p in paths.items()}
    compare.check_shared(settings)  # the shipped recipes agree
    assert {s["method"] for s in settings.values()} == set(compare.METHODS)
    settings["byol"]["width"] = "32"
    with pytest.raises(ValueError, match="--width"):
        compare.check_shared(settings)
    with pytest.raises(ValueError, match="unknown method 'swav'"):
        compare.recipes(["simsiam", "swav"], [])
    with pytest.raises(ValueError, match="--recipe=byol"):
        compare.recipes(["byol"], ["byol=/no/such.cfg"])


def test_a_method_runs_with_its_recipe_the_budget_a_knn_each_epoch_and_the_linear_probe():
    _, flags = compare.settings_of("byol", compare.RECIPES["byol"], ["width=4"], ["--epochs=2",
                                                                                  "--steps_per_epoch=3",
                                                                                  "--time_budget="])
    assert "--method=byol" in flags and "--width=4" in flags and "--linear_probe" in flags
    assert flags.index("--width=4") > flags.index("--method=byol") or "--width=16" not in flags
    assert flags[-5:] == ["--epochs=2", "--steps_per_epoch=3", "--time_budget=", "--knn_every=1", "--linear_probe"]
    assert not any(f.startswith("--model_dir") for f in flags)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_compare_writes_its_table_json_and_plots_and_a_rerun_trains_nothing(tmp_path):
    out = tmp_path / "compare"
    cmd = [sys.executable, "-m", "tf_simsiam.compare", "--methods=simsiam,barlow", "--budget=4", "--evaluations=2",
           f"--output_dir={out}", "--set=image_size=16,width=4,proj_dim=32,pred_dim=8,batch_size=64,"
           "knn_train_size=500,knn_test_size=200"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (out / "compare.md").read_text()
    assert "| simsiam | 4 |" in table and "| barlow | 4 |" in table and "68.1%" in table
    data = json.loads((out / "compare.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["simsiam", "barlow"]
    for m in data["methods"]:
        assert 0.1 < m["knn_top1"] <= 1 and 0.1 < m["linear_top1"] <= 1 and len(m["knn_curve"]) == 2
        assert m["knn_curve"][1][1] > m["knn_curve"][0][1] > 0  # wall time grows
    assert (out / "knn_steps.png").stat().st_size > 10_000 and (out / "knn_time.png").stat().st_size > 10_000
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "tf_simsiam.train" not in again.stdout and "| barlow | 4 |" in again.stdout
    bad = subprocess.run([*cmd[:3], "--methods=simsiam,swav"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "unknown method 'swav'" in bad.stderr
