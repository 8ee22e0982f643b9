import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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
    monkeypatch.setattr(kd_data.tfds, "servers_reachable", lambda: False)
    with pytest.raises(kd_data.DataError, match="tfds build mnist.*--data_dir"):
        kd_data.load("tfds:mnist", data_dir=str(tmp_path))
    with pytest.raises(kd_data.DataError, match="not prepared"):
        kd_data.load_tfds("mnist", "train", data_dir=str(tmp_path), download=False)
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


X = np.zeros((4, 8, 8, 1), "float32")
NAN_X = X.copy()
NAN_X[2, 0, 0, 0] = np.nan


@pytest.mark.parametrize(
    "x, y, options, message",
    [
        (X, np.array([0, 1, 2, 3]), {"num_classes": 3}, r"Labels range over \[0, 3\].*\[0, 2\]"),
        (X, np.array([0, -1, 2, 1]), {"num_classes": 4}, r"range over \[-1, 2\]"),
        (X, np.array([0.0, 1.5, 2.0, 1.0]), {}, "not whole numbers"),
        (X, np.array(["a", "b", "c", "d"]), {}, "dtype <U1: pass integer class ids"),
        (X, np.full((4, 4), 0.5), {"num_classes": 4}, "non-negative rows summing to 1"),
        (X, np.zeros((4, 2, 2)), {}, r"Labels have shape \(4, 2, 2\)"),
        (NAN_X, np.array([0, 1, 2, 3]), {}, "1 inputs hold NaN or Inf .*sample 2"),
        (np.array(["img"] * 4), np.array([0, 1, 2, 3]), {}, "not numbers"),
        (X, np.array([0, 1, 2, 3]), {"batch_size": 8}, "4 samples, fewer than one batch of 8"),
        (np.float32(1.0), np.array([0]), {}, "need a first axis"),
    ],
)
def test_check_arrays_table(x, y, options, message):
    with pytest.raises(kd_data.DataError, match=message):
        kd_data.check_arrays(x, y, **options)


def test_check_arrays_accepts_what_trains():
    x, y = kd_data.check_arrays(X, np.array([0.0, 1.0, 2.0, 3.0]), num_classes=4, batch_size=4)
    assert x is not None and y.shape == (4,)
    kd_data.check_arrays(X.astype("uint8"), np.eye(4, dtype="float32"), num_classes=4)
    kd_data.check_arrays(np.ones((4, 5), "int32"), np.array([3, 2, 1, 0], "int64"), num_classes=4)


def test_check_dataset_reads_the_spec_and_first_samples():
    labels = np.array([0, 1, 2, 3])
    good = tf.data.Dataset.from_tensor_slices((X, labels))
    assert kd_data.check_dataset(good, num_classes=4, batch_size=4) is good
    with pytest.raises(kd_data.DataError, match="fewer than one batch of 8"):
        kd_data.check_dataset(good, num_classes=4, batch_size=8)
    with pytest.raises(kd_data.DataError, match="NaN or Inf"):
        kd_data.check_dataset(tf.data.Dataset.from_tensor_slices((NAN_X, labels)).batch(2))
    with pytest.raises(kd_data.DataError, match=r"\[0, 2\]"):
        kd_data.check_dataset(good, num_classes=3)
    with pytest.raises(kd_data.DataError, match="not \\(inputs, labels\\) pairs"):
        kd_data.check_dataset(tf.data.Dataset.from_tensor_slices(X))
    with pytest.raises(kd_data.DataError, match="empty"):
        kd_data.check_dataset(good.take(0))


def test_epoch_order_is_a_function_of_seed_and_epoch():
    x = np.arange(20, dtype="float32").reshape(20, 1)
    y = np.arange(20, dtype="int32")
    order = kd_data.SetEpoch()
    train = kd_data.pipeline((x, y), 6, seed=3, epoch=order.epoch)
    assert int(train.cardinality()) == 4

    def labels_of_epoch(epoch):
        order.on_epoch_begin(epoch)
        batches = [b[1] for b in train.as_numpy_iterator()]
        assert [len(b) for b in batches] == [6, 6, 6, 2]
        return np.concatenate(batches)

    first, second, first_again = labels_of_epoch(0), labels_of_epoch(1), labels_of_epoch(0)
    assert sorted(first) == sorted(second) == list(range(20))
    np.testing.assert_array_equal(first, first_again)
    assert not np.array_equal(first, second)
    # A fresh pipeline (a resumed process) at epoch 1 serves epoch 1's batches.
    resumed = kd_data.SetEpoch()
    resumed.on_epoch_begin(1)
    again = kd_data.pipeline((x, y), 6, seed=3, epoch=resumed.epoch)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in again.as_numpy_iterator()]), second)
    for images, labels in again.as_numpy_iterator():
        np.testing.assert_array_equal(images[:, 0], labels)


def test_tfds_offline_fails_at_once_without_retries(tmp_path, monkeypatch):
    attempts = []

    def unreachable(address, timeout=None):
        attempts.append(timeout)
        raise OSError("network is unreachable")

    def no_download(self, *args, **kwargs):
        raise AssertionError("an offline load must not try to download")

    monkeypatch.setattr(kd_data.tfds.socket, "create_connection", unreachable)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(kd_data.DataError, match="cannot be downloaded here"):
        kd_data.load("tfds:mnist", data_dir=str(tmp_path))
    # One probe of a few seconds at most, not minutes of retries.
    assert len(attempts) == 1 and attempts[0] <= 3.0


DTYPES = st.sampled_from(
    ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "U3"]
)


def arrays(max_dims):
    return DTYPES.flatmap(
        lambda dtype: hnp.arrays(
            dtype, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5)
        )
    )


@settings(max_examples=150, deadline=None)
@given(
    x=arrays(4),
    y=arrays(3),
    num_classes=st.none() | st.integers(1, 6),
    batch_size=st.none() | st.integers(1, 8),
)
def test_check_arrays_fuzz_gives_a_clean_error_or_trainable_arrays(x, y, num_classes, batch_size):
    try:
        x, y = kd_data.check_arrays(x, y, num_classes=num_classes, batch_size=batch_size)
    except kd_data.DataError as error:
        assert len(str(error).splitlines()) == 1
        return
    assert 0 < len(x) == len(y) and (batch_size is None or len(x) >= batch_size)
    assert x.dtype.kind in "fiub"
    if x.dtype.kind == "f":
        assert np.all(np.isfinite(x))
    if y.ndim == 1:
        assert np.all(y == np.round(y)) and (
            num_classes is None or 0 <= y.min() <= y.max() < num_classes
        )
    else:
        assert y.ndim == 2 and np.allclose(y.sum(axis=1), 1.0, atol=1e-3) and np.all(y >= 0)


def test_standard_augmentation_shifts_one_row_signals_along_the_row():
    signal = np.arange(1, 11, dtype="float32").reshape(1, 10, 1)
    augment = kd_keras.data.standard_augmentation(padding=3, flip=False)
    seen = set()
    for _ in range(80):
        out = augment(tf.constant(signal), 0)[0].numpy()[0, :, 0]
        # A shift by s in [-3, 3] with zero fill: never a padding row.
        shifts = [
            s
            for s in range(-3, 4)
            if np.array_equal(out, np.roll(np.pad(signal[0, :, 0], 3), s)[3:13])
        ]
        assert len(shifts) == 1, out
        seen.add(shifts[0])
    assert seen == set(range(-3, 4))
