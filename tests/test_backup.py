import json

import keras
import numpy as np
import pytest
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras.callbacks.backup import Backup
from kd_keras.callbacks.backup import read_checkpoint

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large


def spatial_distiller():
    augmenter = kd_keras.augment.SpatialAugmenter(
        sampler="network",
        image_conditioned=True,
        candidates=1,
        interpolation="bilinear",
        filters=4,
        units=8,
        seed=0,
    )
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=augmenter)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return distiller


def values(model):
    return [keras.ops.convert_to_numpy(v.value) for v in model.variables]


class KillAt(keras.callbacks.Callback):
    """Stands in for a kill: raises at the given (epoch, batch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_checkpoint_round_trips_weights_optimisers_phase_and_seeds(tmp_path):
    x, y = tiny_batch(count=16)
    distiller = spatial_distiller()
    distiller.phase = "augmenter"
    backup = Backup(tmp_path, signature={"run": 1}, delete_checkpoint=False)
    distiller.fit(x, y, batch_size=8, epochs=2, callbacks=[backup], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json",
        "epoch-000002.seeds.npz",
        "epoch-000002.weights.h5",
    ]
    assert read_checkpoint(tmp_path)["epoch"] == 2
    saved = values(distiller)

    restored = spatial_distiller()
    before = values(restored)
    restoring = Backup(tmp_path, signature={"run": 1})
    restoring.set_model(restored)
    assert restoring.restore() == 2
    assert restored.phase == "augmenter"
    assert int(restored.augmenter_optimizer.iterations.numpy()) == 4
    after = values(restored)
    assert len(after) == len(saved)
    for a, b in zip(after, saved):
        np.testing.assert_array_equal(a, b)
    # The seed state, which .weights.h5 leaves out, moved and came back.
    seed = [i for i, v in enumerate(restored.variables) if "seed_generator" in v.path]
    assert seed and any(not np.array_equal(before[i], after[i]) for i in seed)


def test_a_kill_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    x, y = tiny_batch(count=16)
    distiller = spatial_distiller()
    backup = Backup(tmp_path, delete_checkpoint=False)
    distiller.fit(x, y, batch_size=8, epochs=1, callbacks=[backup], verbose=0)
    good = values(distiller)

    def dies_half_way(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(distiller, "save_weights", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        distiller.fit(x, y, batch_size=8, epochs=2, callbacks=[backup], verbose=0)
    assert read_checkpoint(tmp_path)["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    resumed = spatial_distiller()
    restoring = Backup(tmp_path)
    restoring.set_model(resumed)
    assert restoring.restore() == 1
    for a, b in zip(values(resumed), good):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_run_or_model_is_refused(tmp_path):
    x, y = tiny_batch(count=16)
    distiller = spatial_distiller()
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[Backup(tmp_path, signature={"seed": 0}, delete_checkpoint=False)],
    )
    other = Backup(tmp_path, signature={"seed": 1})
    other.set_model(spatial_distiller())
    with pytest.raises(ValueError, match="another run .*seed 0 then, 1 now"):
        other.restore()
    plain = kd_keras.Distiller(tiny_teacher(), tiny_student())
    plain.compile(optimizer="sgd")
    mismatched = Backup(tmp_path)
    mismatched.set_model(plain)
    with pytest.raises(ValueError, match="cannot be restored|random seed states"):
        mismatched.restore()
    (tmp_path / "checkpoint.json").write_text(json.dumps({"epoch": "two"}))
    with pytest.raises(ValueError, match="not a kd_keras checkpoint"):
        read_checkpoint(tmp_path)
    assert read_checkpoint(tmp_path / "absent") is None


def test_a_finished_fit_deletes_its_checkpoint_by_default(tmp_path):
    x, y = tiny_batch(count=16)
    spatial_distiller().fit(
        x, y, batch_size=8, epochs=1, callbacks=[Backup(tmp_path / "b")], verbose=0
    )
    assert not (tmp_path / "b").exists()


def test_a_resumed_distillation_equals_an_uninterrupted_one(digits, tmp_path):
    # HARD with a 1:1 cycle and 5 steps per epoch: the checkpoint after epoch
    # 1 resumes in the augmenter's phase, with views drawn from the restored
    # seed and batches in the order of epoch 1.
    x, y = digits.train[0][:80], digits.train[1][:80]
    teacher = kd_keras.models.get("small_cnn", digits.input_shape, 10)

    def run(backup=None, extra=()):
        keras.utils.set_random_seed(0)
        student = kd_keras.models.get("mlp", digits.input_shape, 10, width=16)
        snapshots = kd_keras.callbacks.ViewSnapshots(tmp_path / "logs", x[:4])
        return kd_keras.distill(
            teacher,
            student,
            (x, y),
            recipe="hard",
            epochs=3,
            batch_size=16,
            seed=4,
            student_steps=1,
            augmenter_steps=1,
            sampler="network",
            candidates=1,
            interpolation="bilinear",
            backup=backup,
            callbacks=[snapshots, *extra],
            verbose=0,
        )

    whole = run()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "backup", [KillAt(epoch=1, batch=2)])
    assert read_checkpoint(tmp_path / "backup")["epoch"] == 1
    resumed = run(tmp_path / "backup")
    assert resumed.history.epoch == [1, 2]
    assert int(resumed.optimizer.iterations.numpy()) == 8
    assert int(resumed.augmenter_optimizer.iterations.numpy()) == 7
    for a, b in zip(values(whole), values(resumed)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("interval, saved", [(0.0, [1, 2, 3, 4]), (3600.0, [1, 4])])
def test_a_save_interval_keeps_the_first_and_last_epoch_and_skips_the_rest(
    tmp_path, monkeypatch, interval, saved
):
    x, y = tiny_batch(count=16)
    backup = Backup(tmp_path / "b", delete_checkpoint=False, min_interval_seconds=interval)
    epochs = []
    save = backup.save
    monkeypatch.setattr(backup, "save", lambda done: (epochs.append(done), save(done))[1])
    spatial_distiller().fit(x, y, batch_size=8, epochs=4, callbacks=[backup], verbose=0)
    assert epochs == saved
    assert read_checkpoint(tmp_path / "b")["epoch"] == 4


def test_a_negative_save_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="min_interval_seconds must be >= 0"):
        Backup(tmp_path, min_interval_seconds=-1)
