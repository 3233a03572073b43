"""The ablation runner on a tiny budget: table, plots and JSON; finished variants are not run again."""

import json
import os
import re
import subprocess
import sys

import pytest
from absl.testing import flagsaver

from tf_simsiam import ablations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "image_size=16,width=4,proj_dim=32,pred_dim=8,batch_size=64,steps_per_epoch=3,knn_train_size=300," \
       "knn_test_size=100,precision=float32"


def test_verdict_and_claims():
    assert ablations.verdict(0.001, 0.5, 64)[0] == "collapse"  # z_std far below 1/sqrt(64) = 0.125
    assert ablations.verdict(0.12, 0.11, 64) == ("collapse", "kNN")
    assert ablations.verdict(0.12, 0.7, 64) == ("works", "")
    assert ablations.verdict(0.12, 0.5, 64, untrained_knn=0.45) == (  # learned nothing, not collapsed
        "fails", "kNN near the untrained network's")
    assert ablations.verdict(0.12, 0.25, 64, untrained_knn=0.45) == ("fails", "kNN under the untrained network's")
    # the paper's fixed random predictor: not collapsed, the loss remains high although the kNN rose
    assert ablations.verdict(0.05, 0.6, 64, untrained_knn=0.45, final_loss=-0.3) == ("fails", "loss stays high")
    assert ablations.verdict(0.05, 0.6, 64, untrained_knn=0.45, final_loss=-0.9) == ("works", "")
    assert ablations.verdict(0.05, 0.5, 64, untrained_knn=0.45, final_loss=-0.3) == (
        "fails", "loss stays high and kNN near the untrained network's")
    assert ablations.verdict(0.12, 0.7, 64, untrained_knn=0.45) == ("works", "")
    # z_std held up by BN, but the backbone maps every image to one direction: a collapse, not a failure
    assert ablations.verdict(0.12, 0.3, 64, untrained_knn=0.45, feature_std=0.001,
                             untrained_feature_std=0.02) == ("collapse", "feature_std")
    assert ablations.verdict(0.001, 0.1, 64, feature_std=0.001, untrained_feature_std=0.02) == (
        "collapse", "z_std and feature_std and kNN")
    assert ablations.verdict(0.12, 0.7, 64, feature_std=0.01, untrained_feature_std=0.02) == ("works", "")
    # z on one line (z PC1 > 0.9) while BN holds z_std near 1/sqrt(d): a collapse of the heads
    assert ablations.verdict(0.12, 0.6, 64, untrained_knn=0.45, z_pc1=0.95) == ("collapse", "z PC1")
    assert ablations.verdict(0.001, 0.6, 64, z_pc1=0.99) == ("collapse", "z_std and z PC1")
    assert ablations.verdict(0.12, 0.7, 64, z_pc1=0.85) == ("works", "")
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


def test_seeds_name_their_runs_and_a_second_way_to_set_the_seed_is_refused():
    base = {"seed": "0", "width": "8"}
    assert ablations.parse_seeds([], [], base) == [0]  # the recipe's own seed
    assert ablations.parse_seeds(["0", "2", "1", "2"], ["width=4"], base) == [0, 2, 1]
    with pytest.raises(SystemExit, match="--seeds=0,x"):
        ablations.parse_seeds(["0", "x"], [], base)
    with pytest.raises(SystemExit, match="--seeds and --set=seed"):
        ablations.parse_seeds(["1"], ["seed=3"], base)
    # the recipe's seed keeps the variant's folder (single-seed runs are reused), another seed is a --set item
    assert list(ablations.seed_runs({"stop_gradient": False}, [0, 2], 0, ["width=4"])) == [
        (0, "stop_gradient-False", ["width=4"]), (2, "seed-2_stop_gradient-False", ["width=4", "seed=2"])]
    assert list(ablations.seed_runs({}, [1], 0, [])) == [(1, "seed-1", ["seed=1"])]


def test_each_suite_has_its_own_budget_unless_one_is_given():
    if not ablations.FLAGS.is_parsed():
        ablations.FLAGS(["ablations"])
    with flagsaver.flagsaver(budget=None, output_dir="out"):
        # the stop-gradient suite trains four times longer than the others
        assert [ablations.budget_of(s) for s in ablations.ORDER] == [80, 20, 20, 20, 20, 20]
        # a variant shared by suites of two budgets (the baseline) runs once per budget, in that budget's folder
        assert ablations.run_dir_of(80, "default") == os.path.join("out", "epochs-80", "default")
        assert ablations.run_dir_of(20, "default") == os.path.join("out", "epochs-20", "default")
    with flagsaver.flagsaver(budget=5):
        assert {ablations.budget_of(s) for s in ablations.ORDER} == {5}


def test_z_pc1_is_kept_per_run_and_measured_again_only_for_another_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "z_pc1.json").write_text(json.dumps({"z_pc1": 0.5, "epoch": 3, "batches": ablations.Z_PC1_BATCHES}))
    assert ablations.z_pc1_of(str(run), 3) == 0.5  # kept: not measured again
    # a run of another length must be measured again; with no checkpoint to measure, no figure and a warning
    assert ablations.z_pc1_of(str(run), 4) is None
    assert "no z PC1 for" in capsys.readouterr().err
    assert json.loads((run / "z_pc1.json").read_text())["epoch"] == 3


def _run(seed, knn, outcome, why=""):
    return {"seed": seed, "knn": knn, "z_std": 0.01, "z_pc1": 0.9, "feature_std": 0.002, "final_loss": -0.9,
            "pixels_knn": 0.7, "untrained_knn": 0.45, "untrained_feature_std": 0.02, "steps": 100,
            "train_seconds": 10.0, "status": "ran", "outcome": outcome, "why": why}


def test_a_variant_over_seeds_is_their_mean_its_range_and_a_count_of_outcomes():
    one = ablations.summarize([_run(0, 0.11, "collapse", "z_std and kNN")])
    assert one["ours"] == "collapse (z_std and kNN)" and one["knn"] == 0.11 and one["outcome"] == "collapse"
    three = ablations.summarize([_run(0, 0.11, "collapse", "z_std and kNN"), _run(1, 0.42, "collapse", "z_std"),
                                 _run(2, 0.53, "collapse", "z_std")])
    assert three["knn"] == pytest.approx((0.11 + 0.42 + 0.53) / 3) and three["knn_range"] == [0.11, 0.53]
    assert three["outcome"] == "collapse" and three["ours"] == "collapse 3/3 (by z_std 3, kNN 1)"
    assert three["train_seconds"] == 30.0 and len(three["seeds"]) == 3
    pc1 = ablations.summarize([_run(0, 0.4, "collapse", "z PC1"), _run(1, 0.4, "collapse", "z_std and z PC1")])
    assert pc1["ours"] == "collapse 2/2 (by z_std 1, z PC1 2)"
    mixed = ablations.summarize([_run(0, 0.2, "collapse", "kNN"), _run(1, 0.5, "fails", "kNN near the untrained"),
                                 _run(2, 0.48, "fails", "kNN near the untrained")])
    assert mixed["outcome"] == "mixed" and mixed["ours"] == "collapse 1/3, fails 2/3 (by kNN 1)"
    # seeds that disagree never count as the paper's outcome
    assert ablations.held("predictor", [{**mixed, "variant": "no predictor", "paper": 0.1,
                                         "paper_outcome": "collapse"}]) == "no"


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_stopgrad_suite_writes_table_plots_json_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "tf_simsiam.ablations", "--suite=stopgrad", "--budget=2", f"--set={TINY}",
           f"--output_dir={tmp_path}"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (tmp_path / "ablations.md").read_text()
    assert "### stopgrad" in table and "| no stop-gradient |" in table
    assert "| baseline (predictor lr fixed) |" in table
    data = json.loads((tmp_path / "ablations.json").read_text())
    assert {r["variant"] for r in data["rows"]} == {"baseline (predictor lr fixed)", "no stop-gradient"}
    assert data["budget_epochs"] == {"stopgrad": 2} and "### stopgrad (2 epochs;" in table
    assert all(len(curve["z_std"]) == 2 and len(curve["feature_std"]) == 2 for curve in data["per_epoch"].values())
    assert all(0 < r["feature_std"] < 1 and 0 < r["untrained_feature_std"] < 1 for r in data["rows"])
    # z PC1, measured once from each run's last checkpoint and kept in its folder
    assert "| final z_std | z PC1 |" in table and all(0 < r["z_pc1"] <= 1 for r in data["rows"])
    kept = {path: path.stat().st_mtime_ns for path in tmp_path.glob("epoch*/*/z_pc1.json")}
    assert len(kept) == 2 and all(json.loads(path.read_text())["epoch"] == 2 for path in kept)
    for plot in ("zstd.png", "loss.png", "knn.png", "feature_std.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    # run again with a second seed: seed 0's finished runs are not trained again, only seed 1's; the table gives
    # means, ranges and counts
    second = subprocess.run(cmd + ["--seeds=0,1"], capture_output=True, text=True, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = tmp_path / "epochs-2"  # the runs of one budget share a folder
    assert second.stdout.count("tf_simsiam.train") == 2 and (runs / "seed-1_stop_gradient-False").is_dir()
    assert "--model_dir=" + str(runs / "default") not in second.stdout
    data = json.loads((tmp_path / "ablations.json").read_text())
    assert data["seeds"] == [0, 1] and [r["status"] for r in data["rows"]] == ["done before, ran"] * 2
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())  # not measured again
    assert len(list(tmp_path.glob("epoch*/*/z_pc1.json"))) == 4
    assert [run["status"] for r in data["rows"] for run in r["seeds"]] == ["done before", "ran"] * 2
    assert [run["seed"] for run in data["rows"][1]["seeds"]] == [0, 1]
    assert set(data["per_epoch"]) == {f"stopgrad: {v} (seed {s})" for s in (0, 1)
                                      for v in ("baseline (predictor lr fixed)", "no stop-gradient")}
    for r in data["rows"]:
        assert r["ours"].startswith(f"{r['outcome']} 2/2") if r["outcome"] != "mixed" else "1/2" in r["ours"]
    table = (tmp_path / "ablations.md").read_text()
    assert "seeds 0, 1" in table
    assert re.search(r"\| baseline \(predictor lr fixed\) \| 6 \| [-.\d]+ \| [.\d]+% \([.\d]+-[.\d]+\) \|", table)
