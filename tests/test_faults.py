import keras
import numpy as np
import pytest
from absl import logging
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher
from keras import ops

import kd_keras
from kd_keras.augment import Augmenter
from kd_keras.augment import View
from kd_keras.callbacks.backup import Backup
from kd_keras.callbacks.backup import read_checkpoint
from kd_keras.callbacks.faults import CollapseMonitor
from kd_keras.callbacks.faults import NumericalFault
from kd_keras.callbacks.faults import StopOnNonFinite


class NaNAfter(keras.layers.Layer):
    """The identity for `steps` training calls, then NaN: a student that diverges."""

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x, training=False):
        if training:
            self.calls.assign_add(1.0)
        poisoned = ops.logical_and(training, self.calls > self.steps)
        return x + ops.where(poisoned, float("nan"), 0.0)


def diverging_student(steps):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    x = NaNAfter(steps)(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


class NaNDistillation:
    """A distillation term that is NaN from its first step; the cross-entropy stays finite."""

    name = "broken_kd"

    def compute_loss(self, teacher_logits, student_logits):
        return ops.mean(student_logits) * float("nan")


def test_a_nan_student_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path):
    x, y = tiny_batch(count=32)
    distiller = kd_keras.Distiller(tiny_teacher(), diverging_student(steps=6))
    distiller.compile(optimizer="sgd")
    backup = Backup(tmp_path, delete_checkpoint=False)
    # 4 steps per epoch; step 7 is the third of epoch 2.
    with pytest.raises(
        NumericalFault, match=r"loss kd=nan, student_loss=nan at step 7 \(epoch 2, batch 3\)"
    ):
        distiller.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            verbose=0,
            shuffle=False,
            callbacks=[StopOnNonFinite(), backup],
        )
    assert read_checkpoint(tmp_path)["epoch"] == 1
    restored = kd_keras.Distiller(tiny_teacher(), diverging_student(steps=6))
    restored.compile(optimizer="sgd")
    restoring = Backup(tmp_path)
    restoring.set_model(restored)
    restoring.restore()
    assert int(restored.optimizer.iterations.numpy()) == 4
    assert all(np.all(np.isfinite(w)) for w in restored.student.get_weights())


def test_the_message_names_the_term_that_broke_not_the_total():
    x, y = tiny_batch(count=16)
    distiller = kd_keras.Distiller(
        tiny_teacher(),
        tiny_student(),
        distillation_losses=[kd_keras.losses.TemperatureKL(4.0), NaNDistillation()],
        distillation_loss_weights=[0.5, 0.5],
    )
    distiller.compile(optimizer="sgd")
    with pytest.raises(NumericalFault, match="loss broken_kd=nan at step 1 "):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[StopOnNonFinite()])


def test_distill_stops_on_nan_and_the_finite_run_is_untouched():
    x, y = tiny_batch(count=32)
    with pytest.raises(NumericalFault, match="at step 3 "):
        kd_keras.distill(
            tiny_teacher(), diverging_student(steps=2), (x, y), epochs=2, batch_size=8, verbose=0
        )
    callback = StopOnNonFinite()
    callback.on_epoch_begin(0)
    callback.on_train_batch_end(0, {"loss": 1.0, "accuracy": 0.5, "note": "text"})
    with pytest.raises(NumericalFault, match="val_kd=inf at the end of epoch 1"):
        callback.on_epoch_end(0, {"loss": 1.0, "val_kd": float("inf")})


class Squash(Augmenter):
    """Views `scale * x + (1 - scale) * 0.5`; its objective drives scale to 0 (collapse)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y)
        return View(self.scale * x + (1.0 - self.scale) * 0.5, y)

    def objective(self, x, y, teacher_fn, student_fn):
        return self.scale * self.scale


class Constant(Augmenter):
    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def views(self, x, y, teacher_fn, student_fn, training=True):
        return View(ops.zeros_like(x) + self.value, y)


def monitored(augmenter, **monitor_options):
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=augmenter)
    monitor = CollapseMonitor(tiny_batch(count=8)[0], **monitor_options)
    monitor.set_model(distiller)
    return monitor


def test_collapse_monitor_tells_constant_views_from_living_ones(monkeypatch):
    warnings = []
    monkeypatch.setattr(logging, "warning", warnings.append)
    assert monitored(Augmenter()).spread_ratio() == pytest.approx(1.0)
    collapsed = monitored(Constant(0.5))
    assert collapsed.spread_ratio() == 0.0
    collapsed.on_epoch_end(0)
    assert collapsed.collapsed_epochs == [0]
    assert len(warnings) == 1 and "collapsed at epoch 1" in warnings[0]
    with pytest.raises(NumericalFault, match="collapsed at epoch 3"):
        monitored(Constant(0.5), stop=True).on_epoch_end(2)
    with pytest.raises(NumericalFault, match="views hold 512 NaN/Inf"):
        monitored(Constant(float("nan"))).on_epoch_end(0)
    every_other = monitored(Constant(0.5), every=2)
    every_other.on_epoch_end(1)
    assert every_other.collapsed_epochs == []
    with pytest.raises(ValueError, match="at least 2 inputs"):
        CollapseMonitor(np.zeros((1, 8, 8, 1)))


def test_a_learned_augmenter_collapsing_in_training_is_reported():
    x, y = tiny_batch(count=16)
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=Squash())
    # SGD at 0.5 on scale**2 sets scale to exactly 0 in one augmenter step.
    distiller.compile(optimizer="sgd", augmenter_optimizer=keras.optimizers.SGD(0.5))
    monitor = CollapseMonitor(x[:8])
    schedule = kd_keras.callbacks.PhaseSchedule(augmenter_epochs={1: 1})
    distiller.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[schedule, monitor])
    assert monitor.collapsed_epochs == [1, 2]
