"""The shipped digits teacher matches its card."""

import json

import numpy as np

from kd_keras import shipped


def test_shipped_teacher_matches_its_card(digits, shipped_teacher):
    card = json.loads(shipped.path("digits_cnn_teacher.json").read_text())
    x, y = digits.test
    accuracy = np.mean(shipped_teacher.predict(x, verbose=0).argmax(1) == y)
    x_shifted, y_shifted = digits.test_shifted
    shifted = np.mean(shipped_teacher.predict(x_shifted, verbose=0).argmax(1) == y_shifted)
    assert abs(accuracy - card["test_accuracy"]) < 1e-9
    assert abs(shifted - card["test_accuracy_shifted"]) < 1e-9
    assert card["command"].startswith("kd-keras train-teacher")
    assert shipped_teacher.count_params() == card["parameters"]
    assert shipped.path(shipped.DIGITS_TEACHER).stat().st_size < 4 * 1024 * 1024


def test_shipped_mnist1d_teacher_matches_its_card():
    import kd_keras

    card = json.loads(shipped.path("mnist1d_cnn_teacher.json").read_text())
    teacher = kd_keras.resolve.load_model(shipped.path(shipped.MNIST1D_TEACHER))
    data = kd_keras.data.load_mnist1d()
    x, y = data.test
    accuracy = np.mean(teacher.predict(x, verbose=0).argmax(1) == y)
    assert abs(accuracy - card["test_accuracy"]) < 1e-9
    assert card["dataset"] == "mnist1d" and card["model"] == "mnist1d_cnn"
    assert teacher.count_params() == card["parameters"] == 7710
    # The data's default teacher is this file, and resolves by its name.
    assert data.default_teacher == "shipped:mnist1d_cnn"
    resolved = kd_keras.resolve.resolve_teacher(data.default_teacher, data)
    assert resolved.count_params() == 7710
