"""The data contract: `DataBundle`, input checks, tf.data pipelines, and loaders by name.

Every data set of the toolkit is a loader registered under a name
(`register`); `load(name)` finds it. A bundle carries its own defaults
(teacher, student, epochs, host augmentation), so the jobs never branch on
a data set's name.
"""

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

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
        default_teacher: the teacher a job uses when none is given (a
            `shipped:` name or a zoo name, trained first), or None when the
            data has none and a teacher must be given.
        default_student: the student zoo name a job uses when none is given.
        default_epochs: a job's epochs when none are given (None: the
            recipe's).
        augmentation: the data's own per-sample host augmentation (e.g.
            `standard_augmentation()` for natural images), or None.

    Example:
    ```python
    data = kd_keras.data.load("digits")
    data.default_teacher, data.default_student, data.default_epochs
    ```
    """

    name: str
    train: Any
    test: Any
    num_classes: int
    input_shape: tuple
    test_shifted: Any = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    default_teacher: Any = None
    default_student: str = "mlp"
    default_epochs: Any = None
    augmentation: Any = None

    def sample(self, split="train", count=256):
        """Return up to `count` real inputs of a split as a float32 NumPy array."""
        source = {"train": self.train, "test": self.test}[split]
        if isinstance(source, tf.data.Dataset):
            images = [image for image, _ in source.take(count).as_numpy_iterator()]
            return np.stack(images).astype("float32")
        return np.asarray(source[0][:count], dtype="float32")


# name -> loader(**options) of the data sets with fixed names; then TFDS
# families, tried in order for "tfds:NAME": (matches(name, data_dir), loader).
_LOADERS = {}
_TFDS_FAMILIES = []


def register(name, loader):
    """Register a loader under a data set name, for `load` and `kd-keras --dataset`.

    Args:
        name: the data set's name, e.g. `"digits"`.
        loader: a function `(**options) -> DataBundle`.

    Returns:
        The loader, so `register` also works as a decorator's body.

    Example:
    ```python
    kd_keras.data.register("my-set", lambda: kd_keras.data.DataBundle(...))
    ```
    """
    _LOADERS[name] = loader
    return loader


def register_tfds_family(matches, loader):
    """Register a loader for the `"tfds:NAME"` sets `matches(name, data_dir)` accepts.

    Families are tried in the order they were registered; the last one
    registered is the catch-all (image sets).

    Args:
        matches: `(tfds_name, data_dir) -> bool`.
        loader: `(tfds_name, data_dir, download) -> DataBundle`.

    Example:
    ```python
    kd_keras.data.register_tfds_family(lambda name, _: name == "x", load_x)
    ```
    """
    _TFDS_FAMILIES.append((matches, loader))


def names():
    """Return the names of the registered data sets (TFDS sets are `"tfds:NAME"`)."""
    return sorted(_LOADERS)


def load(name, data_dir=None, download="auto", **options):
    """Load a data set by name: a registered name (offline) or `"tfds:NAME"`.

    The registered names are `kd_keras.data.names()`: `"digits"` (bundled
    handwritten digits), `"mnist1d"` (MNIST-1D, generated offline) and
    `"text-default"` (the synthetic reviews task). TFDS sets with text
    features (e.g. `"tfds:imdb_reviews"`) load as token ids, other TFDS sets
    as images.

    Args:
        name: a registered name or `"tfds:<tfds name>"`.
        data_dir: TFDS data directory.
        download: `True` downloads if needed, `False` never downloads, and
            `"auto"` downloads only when the TFDS servers are reachable.
        **options: passed to a registered loader (e.g. `train_fraction`
            for digits).

    Returns:
        A `DataBundle`.

    Example:
    ```python
    data = kd_keras.data.load("digits", train_fraction=0.2)
    ```
    """
    if name in _LOADERS:
        return _LOADERS[name](**options)
    if str(name).startswith(TFDS_PREFIX):
        tfds_name = name[len(TFDS_PREFIX) :]
        for matches, loader in _TFDS_FAMILIES:
            if matches(tfds_name, data_dir):
                return loader(tfds_name, data_dir, download)
    raise DataError(
        f"Unknown data set {name!r}: use {', '.join(repr(n) for n in names())} or "
        "'tfds:NAME' (e.g. tfds:cifar10)."
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
            f"One-hot labels have {y.shape[1]} columns but the models have {num_classes} classes."
        )
    if not _is_number(y.dtype):
        raise DataError(f"Labels have dtype {y.dtype}: per-class probabilities must be floats.")
    rows = y.astype("float64")
    if (
        not np.all(np.isfinite(rows))
        or np.any(rows < 0)
        or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-3)
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
            f"The data set yields {spec}, not (inputs, labels) pairs: map it to (x, y) tuples."
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
    for element in dataset if batched else dataset.batch(count):
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
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=key)
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
    ordered by `(seed, epoch)`, so a resumed run (`kd_keras.callbacks.backup.Backup`)
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

    Pad-and-crop is a random translation by up to `padding` pixels with zero
    fill; one-row inputs (`(1, length, channels)`) translate along the row
    only (random shifts of a 1-D signal by up to `padding` samples).

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
        # One-row signals (MNIST-1D as 1 x L images) move along the row only:
        # a vertical crop would mostly keep a padding row.
        rows = padding if image.shape[0] != 1 else 0
        padded = tf.pad(image, [[rows, rows], [padding, padding], [0, 0]])
        image = tf.image.random_crop(padded, shape)
        if flip:
            image = tf.image.random_flip_left_right(image)
        return image, label

    return augment


def _as_pair_function(augment):
    if isinstance(augment, keras.layers.Layer):
        return lambda image, label: (augment(image, training=True), label)
    return augment
