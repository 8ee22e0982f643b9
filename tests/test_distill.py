import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras


@pytest.mark.large
def test_distill_on_digits_reaches_a_sane_accuracy(digits, shipped_teacher):
    student = kd_keras.models.get("mlp", digits.input_shape, digits.num_classes)
    distiller = kd_keras.distill(
        shipped_teacher,
        student,
        digits.train,
        epochs=6,
        batch_size=64,
        validation_data=digits.test,
        verbose=0,
    )
    x_test, y_test = digits.test
    accuracy = np.mean(distiller.student.predict(x_test, verbose=0).argmax(1) == y_test)
    assert accuracy > 0.85
    assert distiller.history.history["val_agreement"][-1] > 0.85
    assert distiller.student is student


def test_distill_accepts_a_dataset_and_recipe_overrides():
    x, y = tiny_batch(count=32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    distiller = kd_keras.distill(
        tiny_teacher(),
        tiny_student(),
        dataset,
        epochs=1,
        batch_size=8,
        temperature=2.0,
        verbose=0,
    )
    assert distiller.distillation_losses[0].temperature == 2.0
    assert int(distiller.optimizer.iterations) == 4


def test_distill_is_reproducible_with_a_seed():
    x, y = tiny_batch(count=32)
    runs = [
        kd_keras.distill(
            tiny_teacher(), tiny_student(), (x, y), epochs=1, batch_size=8, seed=3, verbose=0
        ).history.history["loss"]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_distill_bad_input():
    x, y = tiny_batch(count=8)
    with pytest.raises(ValueError, match="Unknown recipe 'nope'"):
        kd_keras.distill(tiny_teacher(), tiny_student(), (x, y), recipe="nope")
    with pytest.raises(ValueError, match="has no option or setting 'tempreature'"):
        kd_keras.distill(tiny_teacher(), tiny_student(), (x, y), tempreature=2.0)
    with pytest.raises(kd_keras.data.DataError, match="empty"):
        kd_keras.distill(tiny_teacher(), tiny_student(), (x[:0], y[:0]))
    with pytest.raises(kd_keras.data.DataError, match="labels must be in"):
        kd_keras.distill(tiny_teacher(), tiny_student(), (x, y + 4))
    empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0]))
    with pytest.raises(kd_keras.data.DataError, match="empty"):
        kd_keras.distill(tiny_teacher(), tiny_student(), empty)


def test_augmenter_recipes_are_reproducible_with_a_seed(digits):
    import random

    x, y = digits.train[0][:64], digits.train[1][:64]
    teacher = kd_keras.models.get("small_cnn", digits.input_shape, 10)
    initial = kd_keras.models.get("mlp", digits.input_shape, 10, width=16).get_weights()
    runs = []
    for state in (1, 2):
        random.seed(state)  # whatever ran before must not matter
        student = kd_keras.models.get("mlp", digits.input_shape, 10, width=16)
        student.set_weights(initial)
        distiller = kd_keras.distill(
            teacher, student, (x, y), recipe="hard", epochs=1, batch_size=16, seed=5, verbose=0
        )
        runs.append(distiller.history.history["loss"])
    assert runs[0] == runs[1]


@keras.saving.register_keras_serializable(package="kd_keras_tests")
class HiddenSoftmax(keras.layers.Layer):
    """A softmax that ends_in_softmax cannot see: it is not a layer's activation."""

    def call(self, x):
        return keras.ops.softmax(x)


def softmax_teacher():
    teacher = tiny_teacher()
    return keras.Model(teacher.inputs, HiddenSoftmax()(teacher.outputs[0]))


X, Y = tiny_batch(count=16)
NAN_X = X.copy()
NAN_X[3] = np.nan


@pytest.mark.parametrize(
    "teacher, data, options, error, message",
    [
        (softmax_teacher, (X, Y), {}, ValueError, r"teacher outputs probabilities .*strip_softmax"),
        (
            tiny_teacher,
            (X, Y),
            {"batch_size": 32},
            kd_keras.data.DataError,
            "16 samples, fewer than one batch of 32",
        ),
        (tiny_teacher, (NAN_X, Y), {}, kd_keras.data.DataError, "1 inputs hold NaN or Inf"),
        (tiny_teacher, (X, Y + 0.5), {}, kd_keras.data.DataError, "not whole numbers"),
        (tiny_teacher, (X, Y), {"epochs": 0}, ValueError, "epochs must be an integer >= 1, got 0"),
        (
            tiny_teacher,
            (X, Y),
            {"batch_size": 0},
            ValueError,
            "batch_size must be an integer >= 1, got 0",
        ),
        (tiny_teacher, X, {}, kd_keras.data.DataError, "Expected \\(x, y\\) arrays"),
        (
            tiny_teacher,
            tf.data.Dataset.from_tensor_slices((X, Y + 4)),
            {},
            kd_keras.data.DataError,
            r"\[4, 7\] but the models have 4 classes",
        ),
    ],
)
def test_distill_refuses_bad_input_before_training(teacher, data, options, error, message):
    student = tiny_student()
    before = [w.copy() for w in student.get_weights()]
    with pytest.raises(error, match=message):
        kd_keras.distill(teacher(), student, data, **{"batch_size": 8, **options}, verbose=0)
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_same_call_gives_the_same_student_weights():
    x, y = tiny_batch(count=32)
    students = [
        kd_keras.distill(
            tiny_teacher(),
            tiny_student(),
            (x, y),
            recipe="mixup",
            epochs=2,
            batch_size=8,
            seed=3,
            verbose=0,
        ).student
        for _ in range(2)
    ]
    for a, b in zip(students[0].get_weights(), students[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    other = kd_keras.distill(
        tiny_teacher(),
        tiny_student(),
        (x, y),
        recipe="mixup",
        epochs=2,
        batch_size=8,
        seed=4,
        verbose=0,
    ).student
    assert not np.array_equal(other.get_weights()[0], students[0].get_weights()[0])
