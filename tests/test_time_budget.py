"""--time_budget: the plan's arithmetic, and a budgeted run that trains its plan, exactly, also when resumed."""

import json
import os

import numpy as np
import pytest

from tf_simsiam import time_budget


@pytest.mark.parametrize("text, seconds", [("600", 600), ("90s", 90), ("10m", 600), ("1.5h", 5400),
                                           ("1h30m", 5400), ("2 min", 120), ("", 0), ("0", 0)])
def test_parse(text, seconds):
    assert time_budget.parse(text) == seconds


@pytest.mark.parametrize("text", ["ten", "10x", "m", "0m", "-5m"])
def test_a_bad_budget_names_the_flag(text):
    with pytest.raises(ValueError, match="--time_budget"):
        time_budget.parse(text)


def test_knn_evaluations_every_n_epochs_and_after_the_last():
    assert [time_budget.knn_evaluations(e, 5) for e in (1, 4, 5, 6, 10, 11)] == [1, 1, 1, 2, 2, 3]
    assert time_budget.knn_evaluations(7, 0) == 0 and time_budget.knn_evaluations(3, 1) == 3


def test_the_plan_spends_what_is_left_on_steps():
    # 600 s budget, 100 spent, 20 reserved, one evaluation of 50 s: (600 - 100 - 20 - 50) s at 2 steps/s
    plan = time_budget.make_plan(600, 100, 2.0, 468, 100, knn_every=5, seconds_per_evaluation=50,
                                 reserved_seconds=20)
    assert (plan.total_steps, plan.epochs, plan.steps_per_epoch, plan.evaluations) == (860, 2, 430, 1)
    assert plan.warmup_steps == 0 and time_budget.Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_more_epochs_mean_more_evaluations_and_fewer_steps():
    # evaluating every epoch: 2 epochs -> 2 evaluations -> (480 - 100) s -> 760 steps, still 2 epochs
    plan = time_budget.make_plan(600, 100, 2.0, 468, 100, knn_every=1, seconds_per_evaluation=50,
                                 reserved_seconds=20)
    assert (plan.total_steps, plan.epochs, plan.steps_per_epoch, plan.evaluations) == (760, 2, 380, 2)


def test_epochs_cap_the_plan_and_the_warmup_keeps_its_share():
    plan = time_budget.make_plan(3600, 10, 100.0, 50, 8, warmup_share=0.25)
    assert (plan.total_steps, plan.epochs, plan.steps_per_epoch, plan.warmup_steps) == (400, 8, 50, 100)
    short = time_budget.make_plan(60, 10, 1.0, 468, 100, warmup_share=0.1)
    assert (short.total_steps, short.epochs, short.steps_per_epoch, short.warmup_steps) == (50, 1, 50, 5)


def test_a_budget_too_small_for_one_step_is_an_error():
    with pytest.raises(ValueError, match="--time_budget=60s leaves time for 0 training steps"):
        time_budget.make_plan(60, 55, 1.0, 100, 10, knn_every=1, seconds_per_evaluation=10)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_a_budgeted_run_trains_its_plan_exactly_and_a_resume_keeps_it(tmp_path):
    from test_train_cli import train
    import h5py

    # a budget that leaves room to spare under a second test process (CI runs two): the plan may reach the cap of
    # --epochs x --steps_per_epoch; what the plan makes of a short budget is the arithmetic tested above
    flags = ["--steps_per_epoch=20", "--epochs=4", "--knn_every=2", "--seed=5", "--checkpoint_every_steps=4",
             "--precision=float32"]
    run = tmp_path / "budget"
    out = train(run, *flags, "--time_budget=150s", "--linear_probe")
    plan = json.loads((run / "config.json").read_text())["time_budget_plan"]
    result = json.loads((run / "result.json").read_text())
    assert result["time_budget_plan"] == plan and "--time_budget=150s: " in out.stderr
    total = plan["epochs"] * plan["steps_per_epoch"]
    assert total == plan["total_steps"] > 0 and plan["steps_per_epoch"] <= 20 and plan["epochs"] <= 4
    assert (result["epochs"], result["steps_per_epoch"]) == (plan["epochs"], plan["steps_per_epoch"])
    assert (run / "checkpoints" / f"step-{total}.weights.h5").exists()
    lr = np.loadtxt(run / "steps.csv", delimiter=",", skiprows=1, usecols=3)  # the cosine ends at the plan's end
    assert lr[0] > 0.9 * lr.max() and lr[-1] < 0.01 * lr.max()
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"training report: {run / 'training.png'}" in out.stdout
    assert 0 < result["linear_top1"] <= 1 and 0 < result["pixels_linear_top1"] <= 1
    assert "linear probe on the frozen encoder: " in out.stdout and "raw pixels: " in out.stdout

    # the same steps without a budget: the probe that measured the rate left no trace in the weights
    plain = tmp_path / "plain"
    train(plain, *flags, f"--steps_per_epoch={plan['steps_per_epoch']}", f"--epochs={plan['epochs']}",
          "--knn_every=0")

    def weights(path):
        with h5py.File(path) as f:
            names = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            return {name: f[name][()] for name in names}

    final = weights(run / "checkpoints" / f"step-{total}.weights.h5")
    expected = weights(plain / "checkpoints" / f"step-{total}.weights.h5")
    for name in expected:
        np.testing.assert_allclose(final[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)

    # resumed from an earlier checkpoint, the run follows its recorded plan (no new measurement) to the same end
    steps = sorted(int(p.name[5:-11]) for p in (run / "checkpoints").glob("step-*.weights.h5"))
    for step in steps[1:]:
        (run / "checkpoints" / f"step-{step}.weights.h5").unlink()
    if (run / "checkpoints" / "checkpoint.json").exists():
        (run / "checkpoints" / "checkpoint.json").unlink()
    out = train(run, *flags, "--time_budget=150s")
    assert f"resuming at step {steps[0]} of {total}" in out.stderr and "--time_budget=150s: " not in out.stderr
    assert json.loads((run / "result.json").read_text())["time_budget_plan"] == plan
    resumed = weights(run / "checkpoints" / f"step-{total}.weights.h5")
    for name in expected:
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
