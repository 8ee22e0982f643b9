"""MNIST-1D: a published 1-D benchmark generated offline, where CNNs beat MLPs by far.

MNIST-1D (Greydanus & Kobak) draws 4,000 training and 1,000 test sequences
of length 40 (10 classes) from ten hand-made templates with random
padding, translation, scaling, shear and correlated noise, standardised,
from a fixed seed. It is generated here (`mnist1d.data.make_dataset`, ~3 s),
never downloaded. Shifts are part of the data itself, so a CNN reaches
~93% where an MLP stays near 64%, and plain KD from the CNN into the MLP
transfers nothing: the benchmark on which spatial augmentation has room to
show (METHODS.md, "Offline benchmarks").

Sequences load as `(1, 40, 1)` "images" (one row, one channel), so every
image recipe runs on them along the sequence; values are standardised
(mean 0, std 1), not in `[0, 1]`.

References:
    Greydanus, Kobak. Scaling down deep learning with MNIST-1D, ICML 2024
    (github.com/greydanus/mnist1d, Apache-2.0).
"""

import functools

import numpy as np

from kd_keras.data.core import DataBundle
from kd_keras.data.core import DataError
from kd_keras.data.core import register

MNIST1D = "mnist1d"
MNIST1D_TEACHER = "shipped:mnist1d_cnn"
MNIST1D_STUDENT = "mnist1d_mlp"
# The paper's and the probes train for 60 epochs (Adam, batch 100).
MNIST1D_EPOCHS = 60


@functools.lru_cache(maxsize=1)
def _generated():
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    # The published split: get_dataset_args()'s seed 42 and sizes; never
    # get_dataset, which downloads.
    data = make_dataset(get_dataset_args())
    return tuple(
        np.asarray(data[key], dtype)
        for key, dtype in (
            ("x", "float32"),
            ("y", "int32"),
            ("x_test", "float32"),
            ("y_test", "int32"),
        )
    )


def load_mnist1d(train_fraction=1.0, seed=0):
    """Load MNIST-1D's standard split, generated offline, as one-row images.

    Args:
        train_fraction: keep this stratified fraction of the 4,000 training
            sequences (the low-data setting, e.g. `0.2`).
        seed: seed of the stratified subset (the data itself is always the
            published draw).

    Returns:
        A `DataBundle` of float32 `(n, 1, 40, 1)` standardised sequences and
        int32 labels, 10 classes; default teacher the shipped MNIST-1D CNN,
        student the paper's MLP (`"mnist1d_mlp"`), 60 epochs.

    Example:
    ```python
    data = kd_keras.data.load_mnist1d()
    x_train, y_train = data.train  # (4000, 1, 40, 1), (4000,)
    ```
    """
    if not 0 < train_fraction <= 1:
        raise DataError(f"train_fraction must be in (0, 1], got {train_fraction}.")
    x, y, x_test, y_test = _generated()
    if train_fraction < 1:
        from sklearn.model_selection import train_test_split

        x, _, y, _ = train_test_split(
            x, y, train_size=train_fraction, stratify=y, random_state=seed
        )
    return DataBundle(
        name=MNIST1D,
        train=(x[:, None, :, None], y),
        test=(x_test[:, None, :, None], y_test),
        num_classes=10,
        input_shape=(1, x.shape[1], 1),
        default_teacher=MNIST1D_TEACHER,
        default_student=MNIST1D_STUDENT,
        default_epochs=MNIST1D_EPOCHS,
    )


register(MNIST1D, load_mnist1d)
