"""The ablation runner on a tiny budget: table, plots and JSON; finished variants are not run again."""

import json
import os
import subprocess
import sys

import pytest

from tf_simsiam import ablations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "image_size=16,width=4,proj_dim=32,pred_dim=8,batch_size=64,steps_per_epoch=3,knn_train_size=300," \
       "knn_test_size=100,precision=float32"


def test_verdict_and_claims():
    assert ablations.verdict(0.001, 0.5, 64)[0] == "collapse"  # z_std far below 1/sqrt(64) = 0.125
    assert ablations.verdict(0.12, 0.11, 64) == ("collapse", "kNN")
    assert ablations.verdict(0.12, 0.7, 64) == ("works", "")
    assert ablations.verdict(0.12, 0.5, 64, untrained_knn=0.45)[0] == "fails"  # learned nothing, not collapsed
    assert ablations.verdict(0.12, 0.7, 64, untrained_knn=0.45) == ("works", "")
    # z_std held up by BN, but the backbone maps every image to one direction: a collapse, not a failure
    assert ablations.verdict(0.12, 0.3, 64, untrained_knn=0.45, feature_std=0.001,
                             untrained_feature_std=0.02) == ("collapse", "feature_std")
    assert ablations.verdict(0.001, 0.1, 64, feature_std=0.001, untrained_feature_std=0.02) == (
        "collapse", "z_std and feature_std and kNN")
    assert ablations.verdict(0.12, 0.7, 64, feature_std=0.01, untrained_feature_std=0.02) == ("works", "")
    rows = [{"variant": "a", "paper": 68.1, "knn": 0.7, "outcome": "works", "paper_outcome": "works"},
            {"variant": "b", "paper": 63.2, "knn": 0.6, "outcome": "works", "paper_outcome": "works"}]
    assert ablations.held("similarity", rows) == "yes"
    rows[1]["knn"] = 0.8
    assert ablations.held("similarity", rows) == "no"
    fails = [{"variant": "c", "paper": 1.5, "knn": 0.5, "outcome": "works", "paper_outcome": "fails"}]
    assert ablations.held("predictor", fails) == "no"
    fails[0]["outcome"] = "fails"
    assert ablations.held("predictor", fails) == "yes"


def test_batch_variants_keep_the_images_per_epoch_and_the_base_setting_is_the_baseline(tmp_path):
    cfg = tmp_path / "base.cfg"
    cfg.write_text("# a recipe\n--batch_size=64\n--steps_per_epoch=100\n--fix_pred_lr\n--nosymmetric\n")
    base = ablations.read_flagfile(str(cfg), ["width=4"])
    assert base == {"batch_size": "64", "steps_per_epoch": "100", "fix_pred_lr": "true", "symmetric": "false",
                    "width": "4"}
    assert ablations.resolve({"batch_size": 256}, base) == {"batch_size": 256, "steps_per_epoch": 25}
    assert ablations.resolve({"batch_size": 64}, base) == {}  # the base's own batch: the baseline run
    assert ablations.variant_key(ablations.resolve({"batch_size": 64}, base)) == "default"
    assert ablations.resolve({"symmetric": False, "stop_gradient": False}, base) == {"stop_gradient": False}
    assert ablations.resolve({"batch_size": 128}, {"batch_size": "64"}) == {"batch_size": 128}  # whole epochs


def test_a_finished_run_of_other_settings_is_refused_not_reused(tmp_path, monkeypatch):
    cfg = tmp_path / "base.cfg"
    cfg.write_text("--batch_size=64\n--width=8\n")
    run_dir = tmp_path / "default"
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    assert ablations.run_variant(str(run_dir), {}, 3, str(cfg), []) == "ran"
    (run_dir / "result.json").write_text("{}")
    assert ablations.run_variant(str(run_dir), {}, 3, str(cfg), []) == "done before"
    assert len(calls) == 1
    for budget, extra, recipe in ((4, [], "--width=8"), (3, ["width=16"], "--width=8"), (3, [], "--width=16")):
        cfg.write_text(f"--batch_size=64\n{recipe}\n")
        with pytest.raises(SystemExit, match=f"{run_dir} holds a finished run of other settings"):
            ablations.run_variant(str(run_dir), {}, budget, str(cfg), extra)
    assert len(calls) == 1


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_stopgrad_suite_writes_table_plots_json_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "tf_simsiam.ablations", "--suite=stopgrad", "--budget=2", f"--set={TINY}",
           f"--output_dir={tmp_path}"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (tmp_path / "ablations.md").read_text()
    assert "### stopgrad" in table and "| no stop-gradient |" in table and "| baseline |" in table
    data = json.loads((tmp_path / "ablations.json").read_text())
    assert {r["variant"] for r in data["rows"]} == {"baseline", "no stop-gradient"}
    assert all(len(curve["z_std"]) == 2 and len(curve["feature_std"]) == 2 for curve in data["per_epoch"].values())
    assert all(0 < r["feature_std"] < 1 and 0 < r["untrained_feature_std"] < 1 for r in data["rows"])
    for plot in ("zstd.png", "loss.png", "knn.png", "feature_std.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert second.returncode == 0 and "tf_simsiam.train" not in second.stdout  # nothing trained again
    assert json.loads((tmp_path / "ablations.json").read_text())["rows"][0]["status"] == "done before"
