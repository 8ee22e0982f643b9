"""Data: the embedded digits default, TFDS image sets, NumPy arrays, tf.data pipelines."""

import dataclasses
import os
import socket
from typing import Any

import keras
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


def check_arrays(x, y, num_classes=None, batch_size=None):
    """Validate `(x, y)` arrays early, with the fix in the message.

    Args:
        x: numeric inputs (float, int or bool), first axis the samples; no
            NaN or Inf.
        y: integer class ids `(n,)` (whole-valued floats are accepted) or
            per-class probabilities `(n, classes)` (non-negative rows that sum
            to 1).
        num_classes: when given, class ids must lie in `[0, num_classes)` and
            probability rows must have `num_classes` columns.
        batch_size: when given, there must be at least one full batch.

    Returns:
        `(x, y)` as NumPy arrays.

    Raises:
        DataError: the arrays cannot be trained on; the message says why.

    Example:
    ```python
    x, y = kd_keras.data.check_arrays(x, y, num_classes=10, batch_size=64)
    ```
    """
    try:
        x, y = np.asarray(x), np.asarray(y)
    except ValueError as error:
        raise DataError(
            f"The inputs or labels are not rectangular arrays ({error}): pad or "
            "crop every sample to one shape."
        ) from error
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(
            f"Got inputs of shape {x.shape} and labels of shape {y.shape}: both "
            "need a first axis over the samples."
        )
    if len(x) == 0:
        raise DataError("The training data is empty: pass at least one sample.")
    if len(x) != len(y):
        raise DataError(f"Got {len(x)} inputs but {len(y)} labels: they must match.")
    if not (_is_number(x.dtype) or x.dtype == bool):
        raise DataError(
            f"The inputs have dtype {x.dtype}, not numbers: convert them to "
            "float32 (images) or integer token ids."
        )
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise DataError(
            f"{int(bad.sum())} inputs hold NaN or Inf (the first is sample "
            f"{int(np.argmax(bad))}): drop or repair them before training."
        )
    if y.ndim == 1:
        _check_class_ids(y, num_classes)
    elif y.ndim == 2:
        _check_probabilities(y, num_classes)
    else:
        raise DataError(
            f"Labels have shape {y.shape}: pass class ids (n,) or per-class "
            "probabilities (n, classes)."
        )
    if batch_size is not None and len(x) < batch_size:
        raise DataError(
            f"The training data has {len(x)} samples, fewer than one batch of "
            f"{batch_size}: lower the batch size to at most {len(x)} or add data."
        )
    return x, y


def _is_number(dtype):
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _check_class_ids(y, num_classes):
    if not _is_number(y.dtype):
        raise DataError(
            f"Labels have dtype {y.dtype}: pass integer class ids (e.g. "
            "y.astype('int32')) or per-class probabilities (n, classes)."
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(
                "Labels are floats that are not whole numbers: pass integer class "
                "ids, or per-class probabilities of shape (n, classes)."
            )
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"Labels range over [{y.min():g}, {y.max():g}] but the models have "
            f"{num_classes} classes: labels must be in [0, {num_classes - 1}]."
        )


def _check_probabilities(y, num_classes):
    if num_classes is not None and y.shape[1] != num_classes:
        raise DataError(
            f"One-hot labels have {y.shape[1]} columns but the models have "
            f"{num_classes} classes."
        )
    if not _is_number(y.dtype):
        raise DataError(
            f"Labels have dtype {y.dtype}: per-class probabilities must be floats."
        )
    rows = y.astype("float64")
    if not np.all(np.isfinite(rows)) or np.any(rows < 0) or not np.allclose(
        rows.sum(axis=1), 1.0, atol=1e-3
    ):
        raise DataError(
            "Labels of shape (n, classes) must be per-class probabilities "
            "(non-negative rows summing to 1): pass one-hot rows, or class ids "
            "of shape (n,)."
        )


def check_dataset(dataset, num_classes=None, batch_size=None, count=256):
    """Validate a `tf.data.Dataset` of `(x, y)` pairs early, on its spec and first samples.

    Checks what `check_arrays` checks on the first `count` samples (batched
    data sets: on their first batches), and that the data set holds at least
    one full batch when its size is known. Samples after the first `count`
    are not read.

    Args:
        dataset: an unbatched (or batched) `tf.data.Dataset` of `(x, y)`.
        num_classes: the models' number of classes.
        batch_size: when given and the data set is unbatched with a known
            size, there must be at least one full batch.
        count: how many samples to inspect.

    Returns:
        `dataset`, unchanged.

    Raises:
        DataError: the data set cannot be trained on; the message says why.

    Example:
    ```python
    train = kd_keras.data.check_dataset(train, num_classes=10, batch_size=64)
    ```
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise DataError(
            f"The data set yields {spec}, not (inputs, labels) pairs: map it to "
            "(x, y) tuples."
        )
    batched = spec[0].shape.rank is not None and spec[0].shape.rank > 0 and spec[0].shape[0] is None
    size = int(dataset.cardinality())
    if size == 0:
        raise DataError("The training data is empty: pass at least one sample.")
    if batch_size is not None and not batched and 0 < size < batch_size:
        raise DataError(
            f"The training data has {size} samples, fewer than one batch of "
            f"{batch_size}: lower the batch size to at most {size} or add data."
        )
    seen = 0
    for element in (dataset if batched else dataset.batch(count)):
        # Batch by batch: padded batches may differ in shape.
        x, _ = check_arrays(element[0].numpy(), element[1].numpy(), num_classes)
        seen += len(x)
        if seen >= count:
            break
    return dataset


def pipeline(
    data,
    batch_size,
    training=True,
    augment=None,
    seed=0,
    cache=True,
    drop_remainder=False,
    epoch=None,
):
    """Build the tf.data input pipeline: cache, shuffle, host-side augment, batch, prefetch.

    Host-side augmentation keeps the device step jittable; it runs before
    batching (after, on whole batches, for an `augment` whose `batched`
    attribute is True), with parallel calls, and after the cache so every
    epoch sees new draws.

    With `epoch` (array data, training), each pass is ordered by a
    permutation drawn from `(seed, epoch)` when the pass starts, so a run
    resumed at epoch `e` sees the batches an uninterrupted run sees; keep the
    variable current with `kd_keras.data.SetEpoch`. A `tf.data.Dataset` is
    shuffled through a buffer instead, in an order that restarts with the
    process.

    Args:
        data: `(x, y)` arrays or an unbatched `tf.data.Dataset` of pairs.
        batch_size: samples per batch.
        training: shuffle (and augment) when True.
        augment: optional `(image, label) -> (image, label)` function, or a
            Keras preprocessing layer applied to the image; a callable with
            `batched = True` (e.g. `kd_keras.augment.pba.PBAAugment`) maps
            `(images, labels)` batches instead.
        seed: shuffle seed.
        cache: cache decoded samples in memory.
        drop_remainder: drop the last partial batch.
        epoch: optional int64 scalar `tf.Variable` holding the epoch
            (`SetEpoch().epoch`); orders array data by `(seed, epoch)`.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Example:
    ```python
    train = kd_keras.data.pipeline(data.train, batch_size=64)
    ```
    """
    if training and epoch is not None and not isinstance(data, tf.data.Dataset):
        dataset = _ordered_by_epoch(data, seed, epoch)
    else:
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
    batched = training and getattr(augment, "batched", False)
    if training and augment is not None and not batched:
        dataset = dataset.map(_as_pair_function(augment), tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if batched:
        dataset = dataset.map(augment, tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _ordered_by_epoch(data, seed, epoch):
    x, y = data
    count = len(y)
    if count == 0:
        raise DataError("The training data is empty: pass at least one sample.")
    # Inputs may be a dict of arrays (e.g. with cached teacher logits).
    inputs, labels = tf.nest.map_structure(tf.constant, x), tf.constant(y)
    seed = tf.constant(int(seed), tf.int64)

    def one_pass(_):
        # Read once per pass, when the pass's iterator starts.
        key = tf.stack([seed, tf.cast(epoch.read_value(), tf.int64)])
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=key
        )
        return tf.data.Dataset.from_tensor_slices(order)

    dataset = tf.data.Dataset.range(1).flat_map(one_pass)
    dataset = dataset.map(
        lambda i: (tf.nest.map_structure(lambda t: tf.gather(t, i), inputs), tf.gather(labels, i))
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


class SetEpoch(keras.callbacks.Callback):
    """Keeps a pipeline's epoch variable at the epoch `fit` is about to train.

    Pass `SetEpoch().epoch` as `pipeline(..., epoch=...)` and the `SetEpoch`
    itself to `fit(callbacks=...)`: each pass over array data is then
    ordered by `(seed, epoch)`, so a resumed run (`kd_keras.backup.Backup`)
    trains on the same batches as one that never stopped.

    Returns:
        A Keras callback with an int64 `epoch` variable.

    Example:
    ```python
    order = kd_keras.data.SetEpoch()
    train = kd_keras.data.pipeline(data.train, 64, seed=0, epoch=order.epoch)
    distiller.fit(train, epochs=10, callbacks=[order])
    ```
    """

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


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
    if isinstance(augment, keras.layers.Layer):
        return lambda image, label: (augment(image, training=True), label)
    return augment
