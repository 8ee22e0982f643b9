"""Regression tests for setups users brought: one-row signals, phases after fit, phase logs."""

import glob
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LearnableOffset
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras.callbacks import PhaseSchedule


def test_cutmix_on_one_row_signals_cuts_a_segment_of_the_row():
    # A (1, 40, 1) "image": a square box would have a side of 0 rows, leaving
    # every mixed view a copy of its source (the user's cutmix run at chance).
    x = np.arange(8 * 40, dtype="float32").reshape(8, 1, 40, 1)
    cutmix = kd_keras.augment.CutMix(seed=3, per="sample")
    cutmix.build(x.shape)
    mixed, partner, lam = (keras.ops.convert_to_numpy(t) for t in cutmix.mix_images(x))
    changed = mixed[:, 0, :, 0] != x[:, 0, :, 0]
    assert changed.any(axis=1).sum() >= 6  # a view is a copy only if its box is empty
    for i in range(len(x)):
        taken = np.flatnonzero(changed[i])
        if taken.size:
            # One contiguous segment, filled from the partner, as long as 1 - lam says.
            assert taken[-1] - taken[0] + 1 == taken.size
            np.testing.assert_array_equal(mixed[i, 0, taken, 0], x[partner[i], 0, taken, 0])
        assert lam[i] == pytest.approx(1 - taken.size / 40)


def test_cutmix_refuses_single_pixel_inputs():
    cutmix = kd_keras.augment.CutMix(seed=0)
    with pytest.raises(ValueError, match="single pixel: use MixUp"):
        cutmix.mix_images(np.zeros((4, 1, 1, 3), "float32"))


def learnable_distiller():
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=LearnableOffset())
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1), augmenter_optimizer=keras.optimizers.SGD(0.5)
    )
    return distiller


def test_a_run_ends_in_the_student_phase_and_a_bare_fit_says_what_it_trains():
    x, y = tiny_batch(count=32)
    distiller = learnable_distiller()
    # 3 steps of a 1:2 cycle end inside an augmenter phase.
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        steps_per_epoch=3,
        verbose=0,
        callbacks=[PhaseSchedule(student_steps=1, augmenter_steps=2)],
    )
    assert distiller.phase == "student"
    assert int(distiller.augmenter_optimizer.iterations.numpy()) == 2
    before = float(distiller.augmenter.offset.numpy())
    with pytest.warns(UserWarning, match="trains only the student .* the augmenter stays"):
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert float(distiller.augmenter.offset.numpy()) == before
    assert history.history["accuracy"][0] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        distiller.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[PhaseSchedule(student_steps=1, augmenter_steps=1)],
        )


def test_augmenter_epochs_log_only_the_augmenter_and_curves_keep_moving(tmp_path):
    x, y = tiny_batch(count=32)
    distiller = learnable_distiller()
    history = distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        verbose=0,
        validation_data=(x, y),
        callbacks=[
            PhaseSchedule(augmenter_epochs={1: 2}),
            kd_keras.callbacks.TensorBoard(str(tmp_path)),
        ],
    ).history
    # Student metrics for the two student epochs only, never a 0.0 placeholder.
    assert len(history["accuracy"]) == len(history["loss"]) == 2
    assert min(history["student_loss"]) > 0
    assert len(history["augmenter_objective"]) == 2
    # The student is evaluated after every epoch, augmenter epochs included.
    assert len(history["val_accuracy"]) == 4
    assert "val_augmenter_objective" not in history
    assert distiller.steps_trained == 4 * 4
    steps = []
    for path in glob.glob(str(tmp_path / "validation" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "evaluation_accuracy_vs_iterations":
                    steps.append(event.step)
    assert sorted(steps) == [4, 8, 12, 16]


@pytest.mark.parametrize("update_freq, batch_points", [("epoch", 0), (1, 8)])
def test_tensorboard_writes_batch_curves_only_when_asked(tmp_path, update_freq, batch_points):
    x, y = tiny_batch(count=32)
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student())
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[kd_keras.callbacks.TensorBoard(str(tmp_path), update_freq=update_freq)],
    )
    tags = []
    for path in glob.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags += [value.tag for value in event.summary.value]
    assert tags.count("batch_loss") == batch_points
    assert tags.count("epoch_loss") == 2


def test_keras_logits_distillation_with_its_default_loss_is_warned_about():
    with pytest.warns(UserWarning, match="applies no softmax.*KLDivergence"):
        kd_keras.Distiller(
            tiny_teacher(),
            tiny_student(),
            student_loss_weight=0,
            distillation_losses=keras.distillation.LogitsDistillation(temperature=4.0),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kd_keras.Distiller(
            tiny_teacher(),
            tiny_student(),
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=4.0, loss=keras.losses.KLDivergence()
            ),
        )
