import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_simsiam
from tf_simsiam import optim, run_dir


def compiled_model():
    model = tiny_simsiam()
    model.compile(optimizer=optim.simsiam_optimizer(batch_size=8, total_steps=20, base_lr=0.5))
    model.optimizer.build(model.trainable_variables)
    return model


def views(seed=0):
    return np.random.default_rng(seed).random((8, 2, 16, 16, 1), dtype=np.float32)


def test_checkpoints_every_n_steps_and_at_epoch_ends_the_last_kept(tmp_path):
    model = compiled_model()
    checkpoint = run_dir.Checkpoint(str(tmp_path), every_steps=2, keep=3)
    model.fit(tf.data.Dataset.from_tensors(views()).repeat(), epochs=2, steps_per_epoch=3, callbacks=[checkpoint],
              verbose=0)
    # steps 2 and 4 (every 2), 3 and 6 (epoch ends); the last 3 kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json", "step-3.weights.h5", "step-4.weights.h5", "step-6.weights.h5"]
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == {"step": 6, "weights": "step-6.weights.h5"}
    fresh = compiled_model()
    assert run_dir.restore(fresh, str(tmp_path)) == 6
    for a, b in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_several_steps_per_execution_checkpoint_where_the_steps_are(tmp_path):
    model = tiny_simsiam()
    model.compile(optimizer=optim.simsiam_optimizer(batch_size=8, total_steps=20), steps_per_execution=2)
    checkpoint = run_dir.Checkpoint(str(tmp_path), every_steps=2)
    model.fit(tf.data.Dataset.from_tensors(views()).repeat(), epochs=1, steps_per_epoch=6, callbacks=[checkpoint],
              verbose=0)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-2.weights.h5", "step-4.weights.h5", "step-6.weights.h5"]
    assert run_dir.restore(compiled_model(), str(tmp_path)) == 6


def test_a_damaged_checkpoint_is_named_and_the_one_before_it_used(tmp_path, caplog):
    model = compiled_model()
    checkpoint = run_dir.Checkpoint(str(tmp_path), every_steps=1)
    model.fit(tf.data.Dataset.from_tensors(views()).repeat(), epochs=1, steps_per_epoch=2, callbacks=[checkpoint],
              verbose=0)
    newest = tmp_path / "step-2.weights.h5"
    newest.write_bytes(newest.read_bytes()[:2000])
    with caplog.at_level(logging.WARNING, "tf_simsiam"):
        assert run_dir.restore(compiled_model(), str(tmp_path)) == 1
    assert f"{newest} cannot be read" in caplog.text
    (tmp_path / "step-1.weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="no checkpoint in .* can be read"):
        run_dir.restore(compiled_model(), str(tmp_path))
    assert run_dir.restore(compiled_model(), str(tmp_path / "none")) == 0


def test_non_finite_weights_are_never_checkpointed_and_a_non_finite_loss_stops(tmp_path):
    model = compiled_model()
    checkpoint = run_dir.Checkpoint(str(tmp_path), every_steps=1)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    model.backbone.weights[0].assign(np.full(model.backbone.weights[0].shape, np.nan, np.float32))
    checkpoint.save()
    assert list(tmp_path.glob("step-*")) == []
    stop = run_dir.StopOnNonFiniteLoss("Try a smaller --base_lr.")
    stop.set_model(model)
    stop.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(run_dir.TrainingDiverged, match=r"the loss is nan at step 0: .* Try a smaller --base_lr"):
        stop.on_train_batch_end(1, {"loss": float("nan")})


def test_result_json_is_always_valid_json(tmp_path):
    path = str(tmp_path / "result.json")
    run_dir.write_json(path, {"final_loss": float("nan"), "knn": [(1, np.float32(0.5)), (2, float("inf"))],
                              "steps": np.int64(3)})
    assert json.loads((tmp_path / "result.json").read_text(), parse_constant=pytest.fail) == {
        "final_loss": None, "knn": [[1, 0.5], [2, None]], "steps": 3}


def test_an_unusable_model_dir_is_refused_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        run_dir.prepare(str(tmp_path / "file"))
    with pytest.raises(ValueError, match="cannot be written"):
        run_dir.prepare(str(tmp_path / "file" / "below"))
    run_dir.prepare(str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir()
    keras.backend.clear_session()
