import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras


def test_distill_on_digits_reaches_a_sane_accuracy(digits, shipped_teacher):
    student = kd_keras.models.get("mlp", digits.input_shape, digits.num_classes)
    distiller = kd_keras.distill(
        shipped_teacher, student, digits.train, epochs=4, batch_size=64,
        validation_data=digits.test, verbose=0,
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
        tiny_teacher(), tiny_student(), dataset, epochs=1, batch_size=8,
        temperature=2.0, verbose=0,
    )
    assert distiller.distillation_losses[0].temperature == 2.0
    assert int(distiller.optimizer.iterations) == 4


def test_distill_is_reproducible_with_a_seed():
    x, y = tiny_batch(count=32)
    runs = [
        kd_keras.distill(tiny_teacher(), tiny_student(), (x, y), epochs=1, batch_size=8,
                         seed=3, verbose=0).history.history["loss"]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_distill_bad_input():
    x, y = tiny_batch(count=8)
    with pytest.raises(ValueError, match="Unknown recipe 'nope'"):
        kd_keras.distill(tiny_teacher(), tiny_student(), (x, y), recipe="nope")
    with pytest.raises(ValueError, match="has no option tempreature"):
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
        distiller = kd_keras.distill(teacher, student, (x, y), recipe="hard", epochs=1,
                                     batch_size=16, seed=5, verbose=0)
        runs.append(distiller.history.history["loss"])
    assert runs[0] == runs[1]
