import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import kd_keras
from kd_keras import data as kd_data


def test_digits_default_shapes_ranges_and_stratified_split(digits):
    x_train, y_train = digits.train
    x_test, y_test = digits.test
    assert x_train.shape[1:] == x_test.shape[1:] == (28, 28, 1) == digits.input_shape
    assert len(x_train) + len(x_test) == 1797
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    train_share = np.bincount(y_train) / len(y_train)
    test_share = np.bincount(y_test) / len(y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_digits_are_centred_and_the_shifted_copy_is_a_translation(digits):
    x_test, _ = digits.test
    shifted, labels = digits.test_shifted
    np.testing.assert_array_equal(labels, digits.test[1])
    # A 16 px digit centred on 28 px leaves a 6 px empty border.
    assert not x_test[:, :6].any() and not x_test[:, -6:].any()
    moved = 0
    for centred, other in zip(x_test, shifted):
        matches = [
            (dr, dc)
            for dr in range(-6, 7)
            for dc in range(-6, 7)
            if np.array_equal(np.roll(centred, (dr, dc), axis=(0, 1)), other)
        ]
        assert matches, "every shifted digit is a whole-pixel translation"
        moved += matches[0] != (0, 0)
    assert moved > 0.9 * len(x_test)


def test_low_data_split_keeps_every_class(digits):
    small = kd_data.load_digits(train_fraction=0.2)
    assert abs(len(small.train[0]) - 0.2 * len(digits.train[0])) <= 1
    assert set(np.unique(small.train[1])) == set(range(10))
    np.testing.assert_array_equal(small.test[1], digits.test[1])


def test_canvas_too_small_is_refused():
    with pytest.raises(kd_data.DataError, match="canvas_size >= 28"):
        kd_data.load_digits(canvas_size=20)


def test_tfds_loader_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        bundle = kd_data.load("tfds:mnist", data_dir=str(tmp_path), download=True)
        assert bundle.num_classes == 10 and bundle.input_shape == (28, 28, 1)
        images, labels = next(iter(bundle.train.batch(12)))
        assert images.dtype == tf.float32 and labels.dtype == tf.int32
        assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
        assert bundle.sample("test", 5).shape == (5, 28, 28, 1)
        batches = list(kd_data.pipeline(bundle.train, batch_size=5))
        assert [len(b[0]) for b in batches] == [5, 5, 2]


def test_tfds_fails_fast_offline_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(kd_data, "_tfds_reachable", lambda: False)
    started = time.perf_counter()
    with pytest.raises(kd_data.DataError, match="tfds build mnist.*--data_dir"):
        kd_data.load("tfds:mnist", data_dir=str(tmp_path))
    with pytest.raises(kd_data.DataError, match="not prepared"):
        kd_data.load_tfds("mnist", "train", data_dir=str(tmp_path), download=False)
    assert time.perf_counter() - started < 10
    assert not any(tmp_path.iterdir()), "nothing is written when loading fails"


def test_unknown_data_set_names():
    with pytest.raises(kd_data.DataError, match="Unknown data set 'mnist'.*tfds:NAME"):
        kd_data.load("mnist")
    with pytest.raises(kd_data.DataError, match="Unknown TFDS data set"):
        kd_data.load("tfds:no_such_data_set_xyz", download=False)


def test_check_arrays_errors():
    x = np.zeros((4, 8, 8, 1), "float32")
    with pytest.raises(kd_data.DataError, match="empty"):
        kd_data.check_arrays(x[:0], np.zeros(0))
    with pytest.raises(kd_data.DataError, match=r"\[0, 3\]"):
        kd_data.check_arrays(x, np.array([0, 1, 2, 4]), num_classes=4)
    with pytest.raises(kd_data.DataError, match="4 inputs but 3 labels"):
        kd_data.check_arrays(x, np.array([0, 1, 2]))
    with pytest.raises(kd_data.DataError, match="5 columns"):
        kd_data.check_arrays(x, np.eye(5)[:4], num_classes=4)


def test_pipeline_shuffles_augments_and_batches():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    y = np.arange(10, dtype="int32")
    train = kd_data.pipeline((x, y), 4, augment=lambda a, b: (a + 100.0, b), seed=1)
    batches = list(train.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    for images, labels in batches:
        np.testing.assert_array_equal(images[:, 0], labels + 100.0)
    test = kd_data.pipeline((x, y), 4, training=False, augment=lambda a, b: (a + 100.0, b))
    np.testing.assert_array_equal(next(iter(test))[1], [0, 1, 2, 3])
    with pytest.raises(kd_data.DataError, match="empty"):
        kd_data.pipeline((x[:0], y[:0]), 4)
