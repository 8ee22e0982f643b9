"""The teacher-output cache: exact, served only to views of the unchanged inputs."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch as normal_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras.distill import _with_teacher_cache


def tiny_batch(count=16, seed=0):
    # Images in [0, 1]: the rolewise recipe's PBA ops refuse other ranges.
    x, y = normal_batch(count=count, seed=seed)
    return 1 / (1 + np.exp(-x)), y


class CountingTeacher(keras.layers.Layer):
    """The identity, counting the samples that pass, eagerly or in a compiled step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # A tf.Variable outside Keras' tracking: not a weight of the teacher.
        self._seen = [tf.Variable(0, dtype=tf.int64, trainable=False)]

    @property
    def samples(self):
        return int(self._seen[0].numpy())

    @samples.setter
    def samples(self, value):
        self._seen[0].assign(value)

    def call(self, inputs):
        self._seen[0].assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def counted_teacher():
    teacher = tiny_teacher()
    counter = CountingTeacher()
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, teacher(counter(inputs)), name="counted"), counter


def run(recipe, cache, seed=0, **options):
    x, y = tiny_batch(count=32)
    keras.utils.set_random_seed(5)
    student = tiny_student()
    teacher, counter = counted_teacher()
    distiller = kd_keras.distill(
        teacher,
        student,
        (x, y),
        recipe=recipe,
        epochs=2,
        batch_size=8,
        verbose=0,
        teacher_cache=cache,
        seed=seed,
        **options,
    )
    return distiller, counter


@pytest.mark.parametrize("recipe", ["kd", "cutmix"])
def test_cached_and_live_runs_train_the_same_student(recipe):
    live, _ = run(recipe, False)
    cached, _ = run(recipe, True)
    for a, b in zip(live.student.weights, cached.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        live.history.history["loss"], cached.history.history["loss"], rtol=1e-5
    )


def test_the_cache_replaces_the_teachers_passes_over_unchanged_inputs():
    x, y = tiny_batch(count=32)
    for cache, expected in ((False, 2 * 32), (True, 32)):
        teacher, counter = counted_teacher()
        distiller = kd_keras.Distiller(teacher, tiny_student(), student_loss_weight=0.1)
        distiller.compile(optimizer="sgd", run_eagerly=True)
        data, _ = _with_teacher_cache(cache, (x, y), teacher, distiller, None, 4)
        counter.samples = 0  # the cache's own pass
        inputs = data[0]
        distiller.fit(inputs, data[1], batch_size=8, epochs=2, verbose=0, shuffle=False)
        # Live: the teacher sees every sample each epoch; cached: never.
        assert counter.samples == (0 if cache else expected), cache


def test_auto_caches_only_when_exact_and_true_says_why_not(tmp_path):
    x, y = tiny_batch(count=32)
    teacher, student = tiny_teacher(), tiny_student()
    with pytest.raises(ValueError, match="teacher_cache=True, but the recipe augments on the host"):
        kd_keras.distill(
            teacher,
            student,
            (x, y),
            recipe="rolewise",
            epochs=1,
            batch_size=8,
            verbose=0,
            teacher_cache=True,
        )
    dataset = kd_keras.data.pipeline((x, y), 8)
    with pytest.raises(ValueError, match="not \\(x, y\\) arrays"):
        kd_keras.distill(teacher, student, dataset, epochs=1, verbose=0, teacher_cache=True)
    with pytest.raises(ValueError, match="teacher_cache must be 'auto', True or False"):
        kd_keras.distill(teacher, student, (x, y), epochs=1, verbose=0, teacher_cache="yes")
    # auto on a host-augmented recipe trains live, without complaint.
    kd_keras.distill(
        teacher,
        student,
        (x, y),
        recipe="rolewise",
        epochs=1,
        batch_size=8,
        verbose=0,
        teacher_cache="auto",
    )


def test_the_distiller_describes_its_cache_and_auto_skips_what_it_cannot_serve(monkeypatch):
    distiller, _ = run("kd", "auto")
    assert distiller.teacher_cache == {
        "samples": 32,
        "classes": 4,
        "dtype": "float32",
        "bytes": 32 * 4 * 4,
        "validation_samples": 0,
    }
    rolewise, _ = run("rolewise", "auto")
    assert rolewise.teacher_cache is None
    # Above the budget in float32: float16, and the run still matches the live one closely.
    monkeypatch.setattr(sys.modules["kd_keras.distill"], "CACHE_BUDGET", 32 * 4 * 3)
    half, _ = run("kd", True)
    assert half.teacher_cache["dtype"] == "float16" and half.teacher_cache["bytes"] == 32 * 4 * 2
    live, _ = run("kd", False)
    np.testing.assert_allclose(
        half.history.history["loss"], live.history.history["loss"], rtol=1e-2
    )
    # Above it even in float16: auto runs the teacher live, True says why not.
    monkeypatch.setattr(sys.modules["kd_keras.distill"], "CACHE_BUDGET", 32 * 4)
    assert run("kd", "auto")[0].teacher_cache is None
    with pytest.raises(ValueError, match="32 x 4 logits exceed the cache's"):
        run("kd", True)


def test_a_mixing_recipe_runs_the_teacher_only_on_its_mixed_half_when_cached():
    _, live = run("cutmix", False)
    _, cached = run("cutmix", True)
    # Two epochs of 32 samples: x and x' live, x' alone cached (plus the
    # cache's own pass); both runs first check the teacher's logits on them.
    assert live.samples == 32 + 2 * 2 * 32
    assert cached.samples == 32 + 32 + 2 * 32


def test_feature_losses_need_the_live_teacher():
    x, y = tiny_batch(count=32)
    teacher, student = tiny_teacher(), tiny_student()
    distiller = kd_keras.Distiller(
        teacher,
        student,
        [
            kd_keras.losses.TemperatureKL(4.0),
            keras.distillation.FeatureDistillation(
                teacher_layer_name=teacher.layers[-2].name,
                student_layer_name=student.layers[-2].name,
            ),
        ],
        student_loss_weight=0.1,
    )
    assert distiller.needs_teacher_features
    with pytest.raises(ValueError, match="feature losses need the teacher's forward pass"):
        _with_teacher_cache(True, (x, y), teacher, distiller, None, 4)
    assert _with_teacher_cache("auto", (x, y), teacher, distiller, None, 4) == ((x, y), None)


def test_validation_logits_are_cached_too_and_give_the_same_metrics():
    x, y = tiny_batch(count=32)
    x_val, y_val = tiny_batch(count=12, seed=3)
    histories, passes = [], []
    for cache in (False, True):
        keras.utils.set_random_seed(5)
        teacher, counter = counted_teacher()
        distiller = kd_keras.distill(
            teacher,
            tiny_student(),
            (x, y),
            recipe="kd",
            epochs=3,
            batch_size=8,
            verbose=0,
            teacher_cache=cache,
            validation_data=(x_val, y_val),
        )
        histories.append(distiller.history.history)
        passes.append(counter.samples)
    assert distiller.teacher_cache["validation_samples"] == 12
    assert distiller.teacher_cache["bytes"] == (32 + 12) * 4 * 4
    # Live: a logits check (32), 3 epochs of training (96) and of validation (36);
    # cached: the check and one pass over each split.
    assert passes == [32 + 3 * 32 + 3 * 12, 32 + 32 + 12]
    for key in ("val_loss", "val_agreement", "val_accuracy"):
        np.testing.assert_allclose(histories[0][key], histories[1][key], rtol=1e-5)
