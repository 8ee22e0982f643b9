"""Data: the embedded digits default, TFDS image sets, NumPy arrays, tf.data pipelines."""

import dataclasses
import os
import socket
from typing import Any

import numpy as np
import tensorflow as tf

DIGITS = "digits"
TFDS_PREFIX = "tfds:"


class DataError(ValueError):
    """A data set that cannot be loaded or used, with the fix in its message."""


@dataclasses.dataclass
class DataBundle:
    """Everything a distillation run needs to know about its data.

    Args:
        name: the data set's name, e.g. `"digits"` or `"tfds:cifar10"`.
        train: `(x, y)` NumPy arrays or a `tf.data.Dataset` of unbatched
            `(image, label)` pairs.
        test: the same for the held-out split.
        num_classes: number of classes.
        input_shape: shape of one input.
        test_shifted: `(x, y)` out-of-domain test copy (digits only), or None.
        model_kwargs: extra arguments zoo models need for this data, e.g. a
            text set's `vocabulary_size`.
    """

    name: str
    train: Any
    test: Any
    num_classes: int
    input_shape: tuple
    test_shifted: Any = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    def sample(self, split="train", count=256):
        """Return up to `count` real inputs of a split as a float32 NumPy array."""
        source = {"train": self.train, "test": self.test}[split]
        if isinstance(source, tf.data.Dataset):
            images = [image for image, _ in source.take(count).as_numpy_iterator()]
            return np.stack(images).astype("float32")
        return np.asarray(source[0][:count], dtype="float32")


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
            x_train, y_train, train_size=train_fraction, stratify=y_train,
            random_state=seed,
        )
    rng = np.random.default_rng(seed)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x_test), 2))
    centred = np.zeros((len(x_test), 2), dtype="int64")
    return DataBundle(
        name=DIGITS,
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
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(
            f"Unknown TFDS data set {name!r}: see tfds.list_builders() for names."
        ) from error
    if not _prepared(builder):
        if download is False or (download == "auto" and not _tfds_reachable()):
            raise DataError(
                f"TFDS data set {name!r} is not prepared in {builder.data_dir} and "
                "cannot be downloaded here: run `tfds build "
                f"{name}` on a connected machine and pass its --data_dir."
            )
        builder.download_and_prepare()
    if not {"image", "label"} <= set(builder.info.features.keys()):
        raise DataError(
            f"TFDS data set {name!r} has no 'image' and 'label' features: "
            "kd_keras loads image classification sets."
        )
    dataset = builder.as_dataset(split=split, as_supervised=True)
    return dataset.map(_to_float_image, num_parallel_calls=tf.data.AUTOTUNE), builder.info


def _to_float_image(image, label):
    return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)


def _prepared(builder):
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _tfds_reachable(host="storage.googleapis.com", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def load(name, data_dir=None, download="auto", **digits_kwargs):
    """Load a data set by name: `"digits"`, `"text-default"` (both offline) or `"tfds:NAME"`.

    Text sets (`"text-default"`, the synthetic reviews task, and TFDS sets
    with text features such as `"tfds:imdb_reviews"`) load as token ids
    through `kd_keras.text_data`.

    Args:
        name: `"digits"`, `"text-default"` or `"tfds:<tfds name>"`.
        data_dir: TFDS data directory.
        download: see `load_tfds`.
        **digits_kwargs: passed to `load_digits` (e.g. `train_fraction`).

    Returns:
        A `DataBundle`.

    Example:
    ```python
    data = kd_keras.data.load("tfds:cifar100")
    ```
    """
    if name == DIGITS:
        return load_digits(**digits_kwargs)
    from kd_keras import text_data  # it imports this module

    if name == text_data.TEXT_DEFAULT or text_data.is_tfds_text(name, data_dir):
        return text_data.load(name, data_dir=data_dir, download=download)
    if name.startswith(TFDS_PREFIX):
        tfds_name = name[len(TFDS_PREFIX):]
        train, info = load_tfds(tfds_name, "train", data_dir, download)
        test_split = "test" if "test" in info.splits else "validation"
        test, _ = load_tfds(tfds_name, test_split, data_dir, download)
        return DataBundle(
            name=name,
            train=train,
            test=test,
            num_classes=info.features["label"].num_classes,
            input_shape=tuple(info.features["image"].shape),
        )
    raise DataError(
        f"Unknown data set {name!r}: use 'digits', 'text-default' or 'tfds:NAME' "
        "(e.g. tfds:cifar10)."
    )


def check_arrays(x, y, num_classes=None):
    """Validate `(x, y)` arrays early, with the fix in the message.

    Args:
        x: inputs, first axis the samples.
        y: integer labels `(n,)` or per-class probabilities `(n, classes)`.
        num_classes: when given, integer labels must lie in `[0, num_classes)`.

    Returns:
        `(x, y)` as NumPy arrays.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise DataError("The training data is empty: pass at least one sample.")
    if len(x) != len(y):
        raise DataError(f"Got {len(x)} inputs but {len(y)} labels: they must match.")
    if num_classes is not None and y.ndim == 1:
        if y.min() < 0 or y.max() >= num_classes:
            raise DataError(
                f"Labels range over [{y.min()}, {y.max()}] but the models have "
                f"{num_classes} classes: labels must be in [0, {num_classes - 1}]."
            )
    if num_classes is not None and y.ndim == 2 and y.shape[1] != num_classes:
        raise DataError(
            f"One-hot labels have {y.shape[1]} columns but the models have "
            f"{num_classes} classes."
        )
    return x, y


def pipeline(
    data,
    batch_size,
    training=True,
    augment=None,
    seed=0,
    cache=True,
    drop_remainder=False,
):
    """Build the tf.data input pipeline: cache, shuffle, host-side augment, batch, prefetch.

    Host-side augmentation keeps the device step jittable; it runs before
    batching, with parallel calls, and after the cache so every epoch sees new
    draws.

    Args:
        data: `(x, y)` arrays or an unbatched `tf.data.Dataset` of pairs.
        batch_size: samples per batch.
        training: shuffle (and augment) when True.
        augment: optional `(image, label) -> (image, label)` function, or a
            Keras preprocessing layer applied to the image.
        seed: shuffle seed.
        cache: cache decoded samples in memory.
        drop_remainder: drop the last partial batch.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Example:
    ```python
    train = kd_keras.data.pipeline(data.train, batch_size=64)
    ```
    """
    if isinstance(data, tf.data.Dataset):
        dataset = data
    else:
        x, y = data
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
        dataset = dataset.cache()
    if training:
        size = dataset.cardinality()
        buffer = 10_000 if size < 0 else int(min(size, 10_000))
        if buffer == 0:
            raise DataError("The training data is empty: pass at least one sample.")
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if augment is not None:
            dataset = dataset.map(_as_pair_function(augment), tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def standard_augmentation(padding=4, flip=True):
    """The CIFAR recipes' host-side augmentation: pad-and-crop, then horizontal flip.

    `RandomCrop(size, padding=4)` and `RandomHorizontalFlip()` of the CRD /
    RepDistiller training scripts, as a tf.data map function on one
    `(image, label)` pair. It is the "standard augmentation" that produces
    the batch `x` the mixing recipes mix further.

    Args:
        padding: zero padding on each side before the random crop, in pixels.
        flip: also flip left-right with probability 1/2 (not for digits).

    Returns:
        A function `(image, label) -> (image, label)` for `Dataset.map`.

    Example:
    ```python
    train = kd_keras.data.pipeline(data.train, 64, augment=kd_keras.data.standard_augmentation())
    ```
    """

    def augment(image, label):
        shape = tf.shape(image)
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        image = tf.image.random_crop(padded, shape)
        if flip:
            image = tf.image.random_flip_left_right(image)
        return image, label

    return augment


def _as_pair_function(augment):
    import keras

    if isinstance(augment, keras.layers.Layer):
        return lambda image, label: (augment(image, training=True), label)
    return augment
