"""The training report (training.png), the step history it reads, and the fast linear probe of the last lines."""

import numpy as np

from tf_simsiam import callbacks, evaluation, report


class _Optimizer:
    def __init__(self):
        self.iterations = _Value()


class _Value:
    value = 0

    def numpy(self):
        return self.value


class _Model:
    optimizer = _Optimizer()


def test_step_history_rows_are_means_of_their_own_steps(tmp_path):
    """Keras logs the epoch's running mean: the rows recover the mean of the steps since the row before."""
    losses = np.arange(1.0, 13.0)  # steps of two epochs of 6, every 2 steps a row (12 steps / 6 points)
    history = callbacks.StepHistory(str(tmp_path / "steps.csv"), total_steps=12, points=6)
    history.set_model(_Model())
    for epoch in range(2):
        history.on_epoch_begin(epoch)
        for batch in range(6):
            seen = losses[6 * epoch:6 * epoch + batch + 1]
            _Model.optimizer.iterations.value = 6 * epoch + batch + 1
            history.on_train_batch_end(batch, {"loss": seen.mean(), "z_std": 0.5, "lr": 0.1 * (batch + 1)})
        history.on_epoch_end(epoch)
    rows = np.loadtxt(tmp_path / "steps.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2, 3))
    np.testing.assert_array_equal(rows[:, 0], [2, 4, 6, 8, 10, 12])
    np.testing.assert_allclose(rows[:, 1], losses.reshape(6, 2).mean(1), rtol=1e-5)
    np.testing.assert_allclose(rows[:, 2], 0.5, rtol=1e-5)
    np.testing.assert_allclose(rows[:, 3], [0.2, 0.4, 0.6] * 2, rtol=1e-5)  # the step's own learning rate


def test_the_training_figure_has_its_panels_and_reference_lines():
    history = {"epoch": np.array([1.0, 2.0, 3.0]), "knn_top1": np.array([np.nan, 0.7, 0.8])}
    steps = {"step": np.arange(1.0, 31.0), "loss": -np.linspace(0, 0.9, 30), "z_std": np.full(30, 0.02),
             "lr": np.linspace(0.1, 0, 30)}
    fig = report.training_figure(history, steps, pixels_top1=0.7885, untrained_top1=0.58, dim=2048,
                                 threshold=0.2 / np.sqrt(2048))
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert tuple(axes) == report.TRAINING_PANELS
    knn_labels = [line.get_label() for line in axes["kNN top-1"].get_lines()]
    assert knn_labels[1:] == ["raw pixels (78.85%)", "untrained network (58.00%)"]
    curve = axes["kNN top-1"].get_lines()[0]  # the evaluated epochs, from the untrained network at epoch 0
    np.testing.assert_allclose(curve.get_xdata(), [0, 2, 3])
    np.testing.assert_allclose(curve.get_ydata(), [58, 70, 80])
    z_labels = [line.get_label() for line in axes["z_std"].get_lines()]
    assert z_labels == ["z_std", "1/sqrt(d) = 0.0221 (healthy)", "collapse threshold (0.0044)"]
    np.testing.assert_allclose(axes["learning rate"].get_lines()[0].get_ydata(), steps["lr"])


def test_the_training_report_of_a_run_without_files_is_still_written(tmp_path):
    path = tmp_path / "training.png"
    report.training_report(str(tmp_path / "none.csv"), str(tmp_path / "none2.csv"), str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_compiled_linear_probe_on_features_is_the_step_by_step_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    labels = rng.integers(0, 3, 300)
    features = (centres[labels] + rng.normal(size=(300, 8))).astype(np.float32)
    schedule = evaluation.Schedule(epochs=3, batch_size=64, base_lr=3.0, augment=False)
    top1, predicted, losses = evaluation.linear_probe_on_features(features[:200], features[200:], labels[:200],
                                                                  labels[200:], 3, schedule, seed=1)
    import keras
    keras.utils.set_random_seed(1)
    head = evaluation.linear_head(3)
    reference = evaluation._train(lambda f: f, [], head, 8, features[:200], labels[:200], schedule, seed=1)
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
    np.testing.assert_array_equal(predicted, evaluation.predict_classes(lambda f: f, head, features[200:]))
    assert top1 == np.mean(predicted == labels[200:])
