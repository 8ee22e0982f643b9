"""MNIST-1D: the published split, generated offline, as one-row images; its zoo models."""

import numpy as np
import pytest

import kd_keras


def test_mnist1d_is_the_published_split_as_one_row_images(monkeypatch):
    import mnist1d.data

    # Offline: the downloading loader must never be called.
    monkeypatch.setattr(mnist1d.data, "get_dataset", lambda *a, **k: pytest.fail("downloaded"))
    data = kd_keras.data.load("mnist1d")
    (x, y), (x_test, y_test) = data.train, data.test
    assert x.shape == (4000, 1, 40, 1) and x_test.shape == (1000, 1, 40, 1)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert data.input_shape == (1, 40, 1) and data.num_classes == 10
    assert sorted(set(y.tolist())) == list(range(10))
    # Standardised signals, not images in [0, 1].
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05 and x.min() < -1
    # The same draw as the package's own generator with its default arguments.
    raw = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    np.testing.assert_array_equal(x[:, 0, :, 0], raw["x"].astype("float32"))
    np.testing.assert_array_equal(y_test, raw["y_test"])
    assert (data.default_teacher, data.default_student, data.default_epochs) == (
        "shipped:mnist1d_cnn",
        "mnist1d_mlp",
        60,
    )


def test_mnist1d_low_data_split_is_stratified():
    full = kd_keras.data.load_mnist1d()
    small = kd_keras.data.load_mnist1d(train_fraction=0.2, seed=1)
    x, y = small.train
    assert len(y) == 800
    np.testing.assert_array_equal(np.bincount(y), np.round(np.bincount(full.train[1]) * 0.2))
    assert small.test[0] is full.test[0] or np.array_equal(small.test[0], full.test[0])
    with pytest.raises(kd_keras.data.DataError, match=r"train_fraction must be in \(0, 1\]"):
        kd_keras.data.load_mnist1d(train_fraction=0)


def test_mnist1d_models_are_the_papers():
    cnn = kd_keras.models.get("mnist1d_cnn", (1, 40, 1), 10)
    mlp = kd_keras.models.get("mnist1d_mlp", (1, 40, 1), 10)
    # Conv 1->25 k5, 25->25 k5 twice (stride 2: 40 -> 20 -> 10 -> 5), linear 125 -> 10.
    assert cnn.count_params() == (5 * 25 + 25) + 2 * (5 * 25 * 25 + 25) + (5 * 25 * 10 + 10)
    assert mlp.count_params() == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
    assert cnn.output_shape == mlp.output_shape == (None, 10)
