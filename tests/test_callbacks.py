import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LearnableOffset
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher
from conftest import weights_of
from PIL import Image

import kd_keras
from kd_keras.callbacks import PhaseSchedule
from kd_keras.callbacks import ViewSnapshots


class Record(keras.callbacks.Callback):
    """Records, before each batch, the phase it trains in and the optimisers' state."""

    def __init__(self):
        super().__init__()
        self.phases, self.augmenter_iterations, self.augmenter_variables = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.phases.append(self.model.phase[0].upper())
        optimizer = self.model.augmenter_optimizer
        self.augmenter_iterations.append(int(optimizer.iterations))
        self.augmenter_variables.append(variables_of(optimizer))


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def variables_of(optimizer):
    return [keras.ops.convert_to_numpy(v.value) for v in optimizer.variables]


def make(augmenter=None, optimizer="sgd", augmenter_optimizer="adam"):
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=augmenter)
    if augmenter is None or not distiller.learnable_augmenter:
        augmenter_optimizer = None
    distiller.compile(optimizer=optimizer, augmenter_optimizer=augmenter_optimizer)
    return distiller


def fit(distiller, callbacks, steps, epochs=1, **kwargs):
    x, y = tiny_batch(count=4 * steps)
    return distiller.fit(
        x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks, **kwargs
    )


def iterations(distiller):
    return int(distiller.optimizer.iterations), int(distiller.augmenter_optimizer.iterations)


def test_step_mode_flips_at_the_configured_steps_and_resumes_the_cycle():
    distiller = make(LearnableOffset())
    record = Record()
    fit(distiller, [PhaseSchedule(student_steps=3, augmenter_steps=2), record], steps=6, epochs=2)
    assert "".join(record.phases) == "SSSAASSSAASS"
    assert iterations(distiller) == (8, 4)  # the compiled step followed the phase
    # A new fit (and a new schedule) continues the cycle from the iterations.
    record = Record()
    fit(distiller, [PhaseSchedule(student_steps=3, augmenter_steps=2), record], steps=6)
    assert "".join(record.phases) == "SAASSS"
    assert iterations(distiller) == (12, 6)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (dict(augmenter_epochs={1: 2}), "SAASS"),
        (dict(augmenter_epochs=[1, 3], augmenter_epoch_length=1), "SASAS"),
    ],
)
def test_epoch_mode_flips_at_the_configured_epochs(schedule, expected):
    distiller = make(LearnableOffset())
    record = Record()
    fit(distiller, [PhaseSchedule(**schedule), record], steps=2, epochs=5)
    assert "".join(record.phases) == "".join(phase * 2 for phase in expected)
    assert iterations(distiller) == (2 * expected.count("S"), 2 * expected.count("A"))


def test_schedule_arguments_are_validated():
    for kwargs, match in [
        ({}, "exactly one schedule"),
        (dict(student_steps=1, augmenter_steps=1, augmenter_epochs=[1]), "exactly one"),
        (dict(student_steps=2), "augmenter_steps must be an integer >= 1"),
        (dict(student_steps=0, augmenter_steps=1), "student_steps must be"),
        (dict(augmenter_epochs=[3]), "give augmenter_epoch_length"),
        (dict(augmenter_epochs={3: 1}, augmenter_epoch_length=2), "drop it"),
        (dict(augmenter_epochs={0: 3, 2: 1}), "overlap"),
        (dict(augmenter_epochs={-1: 1}), "start epochs >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            PhaseSchedule(**kwargs)


def test_each_mode_is_its_own_class_and_refuses_the_other_modes_arguments():
    steps = PhaseSchedule(student_steps=3, augmenter_steps=1)
    epochs = PhaseSchedule(augmenter_epochs={2: 1})
    assert type(steps) is kd_keras.callbacks.StepPhases and steps.cycle == 4
    assert type(epochs) is kd_keras.callbacks.EpochPhases and epochs.augmenter_epochs == {2: 1}
    assert isinstance(steps, PhaseSchedule) and isinstance(epochs, PhaseSchedule)
    assert [steps.phase_at_step(s) for s in range(5)] == ["student"] * 3 + ["augmenter", "student"]
    assert [epochs.phase_at_epoch(e) for e in range(4)] == [
        "student",
        "student",
        "augmenter",
        "student",
    ]
    with pytest.raises(ValueError, match=r"\['augmenter_epochs'\] belong to the other mode"):
        kd_keras.callbacks.StepPhases(1, 1, augmenter_epochs=[2])
    with pytest.raises(ValueError, match=r"\['student_steps'\] belong to the other mode"):
        kd_keras.callbacks.EpochPhases({2: 1}, student_steps=1)
    with pytest.raises(TypeError, match="Unexpected arguments"):
        kd_keras.callbacks.StepPhases(1, 1, reset_optimiser=True)


def test_error_without_a_learnable_augmenter():
    distiller = make()
    with pytest.raises(ValueError, match="learnable_augmenter is False.*SpatialAugmenter"):
        fit(distiller, [PhaseSchedule(student_steps=1, augmenter_steps=1)], steps=1)


def test_reset_augmenter_optimizer_at_each_augmenter_phase_start():
    distiller = make(LearnableOffset(), augmenter_optimizer=keras.optimizers.Adam(0.01))
    record = Record()
    schedule = PhaseSchedule(student_steps=2, augmenter_steps=2, reset_augmenter_optimizer=True)
    fit(distiller, [schedule, record], steps=12)
    assert "".join(record.phases) == "SSAA" * 3
    augmenter_steps = [i for i, phase in enumerate(record.phases) if phase == "A"]
    assert [record.augmenter_iterations[i] for i in augmenter_steps] == [0, 1] * 3
    # At every phase start the state is a fresh Adam's: zero iterations and
    # moments, the learning rate kept.
    for start in augmenter_steps[::2]:
        state = record.augmenter_variables[start]
        for variable, value in zip(distiller.augmenter_optimizer.variables, state):
            expected = 0.01 if "learning_rate" in variable.path else 0.0
            np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert iterations(distiller) == (6, 2)
    # Resuming mid-phase keeps the state (no reset) and the cycle position.
    distiller = make(LearnableOffset())

    def schedule():
        return PhaseSchedule(student_steps=2, augmenter_steps=2, reset_augmenter_optimizer=True)

    fit(distiller, [schedule()], steps=3)
    assert iterations(distiller) == (2, 1)
    record = Record()
    fit(distiller, [schedule(), record], steps=4)
    assert "".join(record.phases) == "ASSA"
    assert record.augmenter_iterations == [1, 2, 2, 0]
    # Epochs mode resets once per phase, at its first epoch.
    distiller = make(LearnableOffset())
    record = Record()
    schedule = PhaseSchedule(augmenter_epochs={0: 2, 3: 1}, reset_augmenter_optimizer=True)
    fit(distiller, [schedule, record], steps=1, epochs=4)
    assert "".join(record.phases) == "AASA"
    assert record.augmenter_iterations == [0, 1, 2, 0]


def test_phase_and_both_optimisers_survive_backup_and_restore(tmp_path):
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
        return make(augmenter, optimizer=keras.optimizers.SGD(0.1, momentum=0.9))

    class Snapshot(keras.callbacks.Callback):
        """Keeps the state at the start of fit, then after each epoch if `epochs`."""

        def __init__(self, epochs):
            super().__init__()
            self.epochs = epochs

        def on_train_begin(self, logs=None):
            self.take()

        def on_epoch_end(self, epoch, logs=None):
            if self.epochs:
                self.take()

        def take(self):
            model = self.model
            self.state = {
                "phase": model.phase,
                "student": weights_of(model.student),
                "augmenter": weights_of(model.augmenter),
                "optimizer": variables_of(model.optimizer),
                "augmenter_optimizer": variables_of(model.augmenter_optimizer),
            }

    backup_dir = str(tmp_path / "backup")
    # Cycle S A A; 2 steps per epoch; the backup after epoch 1 holds 4 steps
    # (S A A S), so the next step is the augmenter's.
    distiller, saved, record = spatial_distiller(), Snapshot(epochs=True), Record()
    schedule = PhaseSchedule(student_steps=1, augmenter_steps=2)
    backup = keras.callbacks.BackupAndRestore(backup_dir)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(distiller, [backup, schedule, saved, record, Interrupt(2)], steps=2, epochs=4)
    assert "".join(record.phases) == "SAAS"
    assert saved.state["phase"] == "augmenter"
    assert iterations(distiller) == (2, 2)

    resumed, restored, record = spatial_distiller(), Snapshot(epochs=False), Record()
    assert resumed.phase == "student"
    schedule = PhaseSchedule(student_steps=1, augmenter_steps=2)
    backup = keras.callbacks.BackupAndRestore(backup_dir)
    history = fit(resumed, [backup, restored, schedule, record], steps=2, epochs=4)
    assert len(history.epoch) == 2  # epochs 2 and 3 only
    state = restored.state  # taken right after BackupAndRestore loaded
    assert state["phase"] == "augmenter"
    for key in ("student", "augmenter", "optimizer", "augmenter_optimizer"):
        assert len(state[key]) == len(saved.state[key])
        for a, b in zip(state[key], saved.state[key]):
            np.testing.assert_array_equal(a, b)
    assert "".join(record.phases) == "AASA"
    assert iterations(resumed) == (3, 5)


def test_backup_and_restore_alone_resumes_in_the_restored_phase(tmp_path):
    backup_dir = str(tmp_path / "backup")
    distiller = make(LearnableOffset())
    distiller.phase = "augmenter"
    with pytest.raises(RuntimeError):
        fit(
            distiller,
            [keras.callbacks.BackupAndRestore(backup_dir), Interrupt(1)],
            steps=2,
            epochs=2,
        )
    resumed = make(LearnableOffset())
    fit(resumed, [keras.callbacks.BackupAndRestore(backup_dir)], steps=2, epochs=2)
    # fit() chose the student's step before the phase was restored; the
    # restored phase must still be the one that trains.
    assert resumed.phase == "augmenter"
    assert iterations(resumed) == (0, 4)


def test_keras_file_keeps_the_phase_for_the_schedule(tmp_path):
    distiller = make(
        kd_keras.augment.SpatialAugmenter(
            sampler="network",
            image_conditioned=True,
            candidates=1,
            interpolation="bilinear",
            filters=4,
            units=8,
            seed=0,
        )
    )
    fit(distiller, [PhaseSchedule(student_steps=1, augmenter_steps=2)], steps=2)
    # The run ends in the student phase; the cycle's position lives in the
    # optimisers' iterations, which the file keeps.
    assert distiller.phase == "student"
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    assert restored.phase == "student"
    record = Record()
    fit(restored, [PhaseSchedule(student_steps=1, augmenter_steps=2), record], steps=2)
    assert "".join(record.phases) == "AS"
    assert iterations(restored) == (2, 2)


def read_events(log_dir):
    found = {}
    for path in tf.io.gfile.glob(str(log_dir / "views" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def block(grid, box, size):
    top, left = box
    return grid[top : top + size, left : left + size]


def upscaled(image, factor):
    return np.repeat(np.repeat(image, factor, 0), factor, 1)


def test_view_snapshots_write_images_and_scalars(tmp_path):
    distiller = make(LearnableOffset(), augmenter_optimizer=keras.optimizers.SGD(1.0))
    distiller.phase = "augmenter"
    x, _ = tiny_batch(count=16)
    snapshots = ViewSnapshots(tmp_path, x, every=2, count=4)
    fit(distiller, [snapshots], steps=2, epochs=3)
    events = read_events(tmp_path)
    assert [step for step, _ in events["views"]] == [0, 2]
    _, value = events["views"][-1]
    assert value.metadata.plugin_data.plugin_name == "images"
    width, height, png = tf.make_ndarray(value.tensor)
    grid = snapshots.last_grid
    assert (int(height), int(width)) == grid.shape[:2]
    np.testing.assert_array_equal(
        tf.io.decode_png(png).numpy(), np.round(grid * 255).astype("uint8")
    )
    offset = float(distiller.augmenter.offset)
    assert offset != 0.0
    assert [step for step, _ in events["augmenter/offset"]] == [0, 1, 2]
    last = {tag: tf.make_ndarray(values[-1][1].tensor) for tag, values in events.items()}
    np.testing.assert_allclose(last["augmenter/offset"], offset, rtol=1e-5)
    np.testing.assert_allclose(last["augmenter/pair/1"], 2 * offset, rtol=1e-5)
    # 8x8 images drawn 112 px wide (x14, nearest-neighbour); the second row
    # shows the views after the first B samples: x + offset.
    boxes = snapshots.last_boxes
    assert [len(row) for row in boxes] == [4, 4]
    low, high = x[:4].min(), x[:4].max()
    for row, shift in ((0, 0.0), (1, offset)):
        for i in range(4):
            expected = np.clip((x[i, ..., 0] + shift - low) / (high - low), 0, 1)
            shown = block(grid, boxes[row][i], 112)[..., 1]
            np.testing.assert_allclose(shown, upscaled(expected, 14), atol=0.5 / 255 + 1e-6)
    path = snapshots.save_png(tmp_path / "views.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (grid.shape[1], grid.shape[0])


def test_view_snapshots_caption_each_image_with_both_predictions(tmp_path):
    distiller = make(LearnableOffset())
    x, _ = tiny_batch(count=6, seed=3)
    snapshots = ViewSnapshots(tmp_path, x, count=6)
    snapshots.set_model(distiller)
    teacher = np.asarray(distiller.teacher(x, training=False)).argmax(1)
    student = np.asarray(distiller.student(x, training=False)).argmax(1)
    assert snapshots._predictions(x) == [f"T {t}  S {s}" for t, s in zip(teacher, student)]
    missing = x.copy()
    missing[2] = np.nan
    assert snapshots._predictions(missing)[2] is None
    grid = snapshots.snapshot()
    for row in snapshots.last_boxes:
        for top, left in row:
            caption = grid[top + 112 : top + 112 + 14, left : left + 112]
            assert (caption < 0.5).any()  # ink under every image
    # The row labels are written left of the first image.
    top, left = snapshots.last_boxes[0][0]
    assert (grid[top : top + 112, :left] < 0.5).any()


def test_view_snapshots_with_the_identity_augmenter_shows_the_originals(tmp_path):
    distiller = make()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 8, 8)).astype("float32")  # in [0, 1], no channel axis
    snapshots = ViewSnapshots(tmp_path, images, count=8)
    snapshots.set_model(distiller)
    snapshots.save_png(tmp_path / "views.png")  # renders when nothing was written yet
    grid = snapshots.last_grid
    boxes = snapshots.last_boxes
    assert [len(row) for row in boxes] == [5, 5]
    for i in range(5):
        original, view = (block(grid, boxes[row][i], 112) for row in (0, 1))
        np.testing.assert_array_equal(original, view)
        np.testing.assert_allclose(original[..., 0], upscaled(images[i], 14), atol=0.5 / 255 + 1e-6)
        assert np.all(original[..., 0] == original[..., 2])  # grey
    with Image.open(tmp_path / "views.png") as image:
        assert image.size == (grid.shape[1], grid.shape[0])
        assert image.size[0] >= 5 * 112 and image.size[1] >= 2 * 112
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        ViewSnapshots(tmp_path, np.zeros((2, 4, 4, 2)))


def test_view_snapshots_of_a_host_augmentation(tmp_path):
    distiller = make()
    x, _ = tiny_batch(count=4, seed=5)
    snapshots = ViewSnapshots(tmp_path, x, augment=lambda images, labels: (images[:, ::-1], labels))
    snapshots.set_model(distiller)
    grid = snapshots.snapshot()
    low, high = x.min(), x.max()
    flipped = np.clip((x[0, ::-1, :, 0] - low) / (high - low), 0, 1)
    shown = block(grid, snapshots.last_boxes[1][0], 112)[..., 0]
    np.testing.assert_allclose(shown, upscaled(flipped, 14), atol=0.5 / 255 + 1e-6)
