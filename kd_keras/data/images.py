"""Image data sets: the embedded digits default and TFDS image classification sets."""

import numpy as np
import tensorflow as tf

from kd_keras.data.core import DataBundle
from kd_keras.data.core import DataError
from kd_keras.data.core import register
from kd_keras.data.core import register_tfds_family
from kd_keras.data.core import standard_augmentation
from kd_keras.data.tfds import prepared_builder

DIGITS = "digits"
# The shipped teacher of the digits default, and the default run length there.
DIGITS_TEACHER = "shipped:digits_cnn"
DIGITS_EPOCHS = 30


def load_digits(
    canvas_size=28,
    scale=2,
    max_shift=6,
    test_fraction=0.25,
    train_fraction=1.0,
    seed=0,
):
    """Load scikit-learn's bundled handwritten digits on a larger canvas, offline.

    The 1,797 real 8x8 digits are upscaled by `scale` (nearest neighbour) and
    centred on a `canvas_size` square. The split is stratified and fixed by
    `seed`. `test_shifted` holds the test digits translated by random whole
    pixels in `[-max_shift, max_shift]` on each axis: the out-of-domain test
    of the HARD shift-equivariance toy.

    Args:
        canvas_size: side of the square canvas in pixels.
        scale: integer upscaling of the 8x8 digits.
        max_shift: largest translation of the shifted test copy, in pixels.
        test_fraction: fraction of the digits held out for testing.
        train_fraction: keep this stratified fraction of the training split
            (the low-data setting, e.g. `0.2`).
        seed: seed of the split and of the shifts.

    Returns:
        A `DataBundle` with float32 images in `[0, 1]` of shape
        `(canvas_size, canvas_size, 1)` and int32 labels.

    Example:
    ```python
    data = kd_keras.data.load_digits(train_fraction=0.2)
    x_train, y_train = data.train
    ```
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    side = 8 * scale
    if side + 2 * max_shift > canvas_size:
        raise DataError(
            f"Digits of {side} px shifted by up to {max_shift} px do not fit a "
            f"{canvas_size} px canvas: use canvas_size >= {side + 2 * max_shift}."
        )
    if not 0 < train_fraction <= 1:
        raise DataError(f"train_fraction must be in (0, 1], got {train_fraction}.")
    digits = datasets.load_digits()
    images = np.kron(digits.images / 16.0, np.ones((scale, scale))).astype("float32")
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    if train_fraction < 1:
        x_train, _, y_train, _ = train_test_split(
            x_train,
            y_train,
            train_size=train_fraction,
            stratify=y_train,
            random_state=seed,
        )
    rng = np.random.default_rng(seed)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x_test), 2))
    centred = np.zeros((len(x_test), 2), dtype="int64")
    return DataBundle(
        name=DIGITS,
        default_teacher=DIGITS_TEACHER,
        default_epochs=DIGITS_EPOCHS,
        train=(place_on_canvas(x_train, canvas_size), y_train),
        test=(place_on_canvas(x_test, canvas_size, centred), y_test),
        test_shifted=(place_on_canvas(x_test, canvas_size, shifts), y_test),
        num_classes=10,
        input_shape=(canvas_size, canvas_size, 1),
    )


def place_on_canvas(images, canvas_size, offsets=None):
    """Paste `(n, h, w)` images on a zero canvas, centred plus per-image offsets.

    Args:
        images: `(n, h, w)` array.
        canvas_size: side of the square canvas.
        offsets: `(n, 2)` integer (row, column) shifts from the centre, or None.

    Returns:
        A float32 array `(n, canvas_size, canvas_size, 1)`.
    """
    count, height, width = images.shape
    canvas = np.zeros((count, canvas_size, canvas_size, 1), dtype="float32")
    top, left = (canvas_size - height) // 2, (canvas_size - width) // 2
    if offsets is None:
        offsets = np.zeros((count, 2), dtype="int64")
    for index, (row, column) in enumerate(offsets):
        r, c = top + row, left + column
        canvas[index, r : r + height, c : c + width, 0] = images[index]
    return canvas


def load_tfds(name, split, data_dir=None, download="auto"):
    """Load a TFDS image classification split as `(float image in [0, 1], label)`.

    Offline, a data set that is not prepared under `data_dir` fails at once
    with instructions, instead of TFDS retrying its download for minutes.

    Args:
        name: a TFDS name, e.g. `"cifar100"`.
        split: e.g. `"train"` or `"test"`.
        data_dir: TFDS data directory (default: TFDS's own).
        download: `True` downloads if needed, `False` never downloads, and
            `"auto"` downloads only when the TFDS servers are reachable.

    Returns:
        `(dataset, info)`: an unbatched `tf.data.Dataset` and the
        `tfds.core.DatasetInfo`.

    Example:
    ```python
    train, info = kd_keras.data.load_tfds("cifar10", "train")
    ```
    """
    builder = prepared_builder(name, data_dir, download)
    if not {"image", "label"} <= set(builder.info.features.keys()):
        raise DataError(
            f"TFDS data set {name!r} has no 'image' and 'label' features: "
            "kd_keras loads image classification sets."
        )
    dataset = builder.as_dataset(split=split, as_supervised=True)
    return dataset.map(_to_float_image, num_parallel_calls=tf.data.AUTOTUNE), builder.info


def _to_float_image(image, label):
    return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)


def load_tfds_images(name, data_dir=None, download="auto"):
    """Load a TFDS image classification set, e.g. cifar100, as a `DataBundle`.

    The held-out split is `"test"`, or `"validation"` for sets without one.
    Runs on it augment with `standard_augmentation()` (pad-crop-flip) and
    have no default teacher: pass one (a zoo name trains it first).

    Args:
        name: a TFDS name, e.g. `"cifar100"` (without `"tfds:"`).
        data_dir: TFDS data directory.
        download: see `kd_keras.data.tfds.prepared_builder`.

    Returns:
        A `DataBundle` of unbatched `tf.data.Dataset`s.

    Example:
    ```python
    data = kd_keras.data.load_tfds_images("cifar10")
    ```
    """
    train, info = load_tfds(name, "train", data_dir, download)
    test_split = "test" if "test" in info.splits else "validation"
    test, _ = load_tfds(name, test_split, data_dir, download)
    return DataBundle(
        name=f"tfds:{name}",
        train=train,
        test=test,
        num_classes=info.features["label"].num_classes,
        input_shape=tuple(info.features["image"].shape),
        augmentation=standard_augmentation(),
    )


register(DIGITS, load_digits)
# The catch-all family: registered after the text sets (kd_keras.data.text).
register_tfds_family(lambda name, data_dir: True, load_tfds_images)
