"""PBA in tf.data: `PBAAugment`, the batch map applying a schedule, and its epoch callback."""

import keras
import numpy as np
import tensorflow as tf

from kd_keras.augment import ops as image_ops
from kd_keras.augment import warp
from kd_keras.augment.pba import draws
from kd_keras.augment.pba.policy import _ENTRIES
from kd_keras.augment.pba.policy import _MAX_OPS
from kd_keras.augment.pba.policy import _SHAPE
from kd_keras.augment.pba.policy import COPIES
from kd_keras.augment.pba.policy import COUNT_PROBABILITIES
from kd_keras.augment.pba.policy import OP_OPTIONS
from kd_keras.augment.pba.policy import PARAMETER_MAX
from kd_keras.augment.pba.policy import PBA_OPS
from kd_keras.augment.pba.policy import Policy
from kd_keras.augment.pba.policy import _whole
from kd_keras.augment.pba.schedule import as_schedule

# The groups each slot splits a batch into: the ops that move pixels (one
# warp for all of them), each other op alone, and the images without an op.
_GEOMETRIC = tuple(
    index for index, name in enumerate(PBA_OPS) if image_ops.OPS[name].motion is not None
)
_ALONE = tuple(index for index in range(len(PBA_OPS)) if index not in _GEOMETRIC)
_GROUP_OF_OP = np.array(
    [0 if index in _GEOMETRIC else 1 + _ALONE.index(index) for index in range(len(PBA_OPS))]
    + [1 + len(_ALONE)],
    np.int32,
)


class PBAAugment:
    """Applies a PBA schedule to batches in tf.data: `Dataset.batch(64).map(PBAAugment(schedule))`.

    Per image, exactly as PBA's `apply_policy`: draw the number of ops
    `count` from `{0: 0.2, 1: 0.3, 2: 0.5}`; shuffle the 30 (op, probability,
    magnitude) entries of the current epoch's policy; walk them, applying
    each with its probability (magnitude `level / 10`, a random sign for
    signed ops) and counting it when applied; stop once `count` ops were
    applied. Images are floats in `[0, 1]` (or in `value_range`, see below),
    batches `(batch, height, width, channels)` (1 or 3 channels); labels
    pass through.

    The ops assume `[0, 1]`. Inputs in another fixed range, e.g.
    standardised signals, give it as `value_range=(low, high)`: each batch
    is mapped linearly onto `[0, 1]` for the policy and back after it, so
    the networks keep seeing their own units (and `fill_value`, `then` and
    the final Cutout work in them).

    It maps whole batches (`batched = True`, which `kd_keras.data.pipeline`
    honours by mapping it after `batch`), in TensorFlow ops only: the map is
    part of the dataset's graph (no Python function), so tf.data runs it in
    its own threads and the graph can be serialised. The plans of all
    images are drawn at once (`plan`); then, for each of the two slots, each
    op runs once, on the images that chose it, with their own magnitudes
    (`apply`): the five geometric ops as one warp, each image with its own
    affine matrix; ops no image chose do not run. Cutout's squares are
    drawn for the whole batch at once (`draws.stateless_uniform_rows`).

    The policy follows the epoch: the current epoch and policy live in
    variables that `callback()` sets at the start of each epoch (before the
    epoch's data iterator starts under Keras `fit`); `set_epoch` does the
    same by hand. A Keras callback is added for you by `kd_keras.train_teacher`
    and by the `rolewise` recipe. (A pipeline that reads variables runs in
    the TensorFlow runtime that holds them: the process that built it.)

    Randomness is stateless and per image: each image's draws are hashes of
    `(seed, epoch, fingerprint of the image's bytes)` (`image_keys`), so a run
    is reproducible whatever order tf.data's parallel calls run in and
    whatever else is in the image's batch, and an image gets new draws every
    epoch. Identical images in one epoch get identical draws.

    References:
        Ho et al. Population Based Augmentation, ICML 2019
        (`pba/augmentation_transforms_hp.py`); Fu et al., arXiv:2004.08861.

    Args:
        schedule: a `Schedule`, a `Policy` (every epoch) or a schedule path.
        seed: int seed of the draws, or None to draw one from NumPy's global
            generator when the pipeline is built (`kd_keras.distill` and
            `kd_keras.train_teacher` seed it first, so the run's seed decides).
        fill_value: value of pixels the geometric ops and Cutout bring in,
            in the inputs' units.
        cutout: side of the square PBA's pipeline cuts out of every image
            last (after `then`), as a fraction of the image side: 0.5 is
            PBA's 16 px of 32 (role-kd's CIFAR-100: 0.25); 0 for none.
        value_range: `(low, high)`, the range of the inputs, mapped onto the
            ops' `[0, 1]` (training inputs outside it are refused).
        then: optional per-image `(image, label) -> pair` applied to each image
            after the policy, e.g. `kd_keras.data.standard_augmentation()`
            (PBA's CIFAR pipeline).
        in_process: run each batch in TensorFlow's function runtime through
            `tf.py_function` instead of in the dataset's graph. tf.data
            builds a map function's graph anew for each epoch's iterator
            (0.4-0.9 s for this one on 2 busy cores): for short epochs
            (the digits: 23 batches) this is faster; the pipeline then needs
            this Python process (no tf.data service, no serialised graph) and
            the runtime's graph optimiser rounds some ops differently
            (within 3e-6).

    Returns:
        A callable `(images, labels) -> (images, labels)` for `Dataset.map`
        after `Dataset.batch`.

    Example:
    ```python
    augment = kd_keras.augment.pba.PBAAugment("student_schedule.json")
    train = kd_keras.data.pipeline(data.train, 64, augment=augment)
    model.fit(train, epochs=30, callbacks=[augment.callback(30)])
    ```
    """

    batched = True

    def __init__(
        self,
        schedule,
        seed=0,
        fill_value=0.0,
        then=None,
        cutout=0.0,
        in_process=False,
        value_range=(0.0, 1.0),
    ):
        self.schedule = schedule
        if seed is not None:
            seed = _whole(seed, "seed")
        self._seed = seed
        self.fill_value = float(fill_value)
        self.value_range = image_ops.value_range(value_range)
        self.then = then
        if not 0.0 <= cutout <= 1.0:
            raise ValueError(
                f"cutout is the side of PBA's final square as a fraction of the image "
                f"side, in [0, 1], got {cutout}: use 0.5 (PBA's 16 px of 32) or 0."
            )
        self.cutout = float(cutout)
        self.in_process = bool(in_process)
        self.epoch = tf.Variable(0, dtype="int64", trainable=False, name="pba_epoch")
        self._probability_levels = tf.Variable(
            tf.zeros(_SHAPE, "int32"), trainable=False, name="pba_probability_levels"
        )
        self._magnitude_levels = tf.Variable(
            tf.zeros(_SHAPE, "int32"), trainable=False, name="pba_magnitude_levels"
        )
        self.set_epoch(0)

    @property
    def input_range(self):
        """The inputs' range, `value_range`: PBA's ops take it mapped onto `[0, 1]`."""
        return self.value_range

    @property
    def _unit_fill(self):
        # The fill value where the ops work, in [0, 1].
        low, high = self.value_range
        return (self.fill_value - low) / (high - low)

    @property
    def schedule(self):
        """The `Schedule` applied; assign a new one to take effect at the next `set_epoch`."""
        return self._schedule

    @schedule.setter
    def schedule(self, value):
        self._schedule = as_schedule(value)

    @property
    def seed(self):
        """The seed of the draws (None until drawn when `seed=None`)."""
        return self._seed

    @property
    def policy(self):
        """The `Policy` in force now."""
        return Policy(self._probability_levels.numpy(), self._magnitude_levels.numpy())

    def set_epoch(self, epoch, epochs=None):
        """Make the map function use `epoch`'s policy and draws (of a run of `epochs`)."""
        policy = self._schedule.policy_at(epoch, epochs)
        self.epoch.assign(int(epoch))
        self._probability_levels.assign(policy.probabilities.astype("int32"))
        self._magnitude_levels.assign(policy.magnitudes.astype("int32"))

    def callback(self, epochs=None):
        """Return the Keras callback that calls `set_epoch` at the start of each epoch.

        Args:
            epochs: the run's length, to stretch a schedule made for another.

        Returns:
            A `kd_keras.augment.pba.ScheduleCallback`.
        """
        return ScheduleCallback(self, epochs)

    def _resolved_seed(self):
        if self._seed is None:
            self._seed = int(np.random.randint(0, 2**31 - 1))
        return self._seed

    def image_keys(self, images):
        """Return each image's key this epoch, the source of all its draws: `(batch, 3)` int64.

        A key is `(seed, epoch, fingerprint of the image's bytes)`.
        """
        return draws.image_keys(images, self._resolved_seed(), self.epoch.read_value())

    def plan(self, keys):
        """Return which ops each image with key `keys[i]` gets, and their signed magnitudes.

        Args:
            keys: `(batch, 3)` int64 image keys (see `image_keys`).

        Returns:
            `(op_indices, magnitudes)`: `(batch, 2)` int32 indices into
            `PBA_OPS` in the order the ops apply, `len(PBA_OPS)` for an empty
            slot, and `(batch, 2)` float64 magnitudes in `[-1, 1]` (0 in an
            empty slot).
        """
        return self._plan(draws.hashes(keys))

    def _plan(self, hashed):
        thresholds = tf.constant(np.cumsum(COUNT_PROBABILITIES)[:-1], tf.float32)
        count = tf.reduce_sum(
            tf.cast(draws.uniform(hashed[draws.COUNT]) >= thresholds, tf.int32),
            axis=1,
            keepdims=True,
        )
        order = tf.argsort(draws.uniform(hashed[draws.ORDER]), axis=1, stable=True)
        probabilities = (
            tf.cast(tf.gather(tf.reshape(self._probability_levels, [-1]), order), tf.float32)
            / PARAMETER_MAX
        )
        coins = draws.uniform(hashed[draws.COINS]) < probabilities
        applied = tf.cumsum(tf.cast(coins, tf.int32), axis=1)
        chosen = coins & (applied <= count)
        # Entry of slot s: the shuffled entry whose coin made the (s + 1)-th
        # applied op, or `_ENTRIES` (no op) if there is none.
        picked = tf.stack(
            [
                tf.reduce_min(tf.where(chosen & (applied == slot + 1), order, _ENTRIES), axis=1)
                for slot in range(_MAX_OPS)
            ],
            axis=1,
        )
        op_indices = picked // COPIES
        levels = tf.gather(
            tf.concat([tf.reshape(self._magnitude_levels, [-1]), [0]], axis=0), picked
        )
        signed = tf.constant([image_ops.OPS[name].signed for name in PBA_OPS] + [False])
        flips = tf.gather(signed, op_indices) & (draws.uniform(hashed[draws.SIGNS]) < 0.5)
        # In float64, so that the ops get level / 10 rounded once, to their
        # images' own precision.
        magnitudes = tf.cast(levels, tf.float64) / PARAMETER_MAX
        return op_indices, tf.where(flips, -magnitudes, magnitudes)

    def apply(self, images, op_indices, magnitudes, keys):
        """Apply a `plan`'s ops to a batch, slot by slot; `keys` seed Cutout's squares.

        Args:
            images: `(batch, height, width, channels)` floats in `[0, 1]`
                (not in `value_range`: `augment_batch` maps them).
            op_indices: `(batch, 2)` from `plan`.
            magnitudes: `(batch, 2)` from `plan`.
            keys: `(batch, 3)` image keys, as given to `plan`.

        Returns:
            The augmented images.
        """
        return self._apply(images, op_indices, magnitudes, self._centres(draws.hashes(keys)))

    def _centres(self, hashed):
        # Where each image's Cutout squares go: `(batch, 3, 2)`, for slot 0,
        # slot 1 and the final Cutout, from seeds of the image's own hashes.
        seeds = tf.concat(
            [draws.seeds(hashed[draws.CUTOUT]), draws.seeds(hashed[draws.FINAL_CUTOUT])], axis=1
        )
        uniforms = draws.stateless_uniform_rows(tf.reshape(seeds, [-1, 2]))
        return tf.reshape(uniforms, [-1, _MAX_OPS + 1, 2])

    def _apply(self, images, op_indices, magnitudes, centres):
        # A loop over the two slots, not two copies of the ops: tf.data
        # builds a map function's graph anew for every epoch's iterator, in
        # time proportional to its size.
        def slot(index, images):
            return index + 1, self._apply_slot(
                images,
                tf.gather(op_indices, index, axis=1),
                tf.gather(magnitudes, index, axis=1),
                tf.gather(centres, index, axis=1),
            )

        _, images = tf.while_loop(lambda index, _: index < _MAX_OPS, slot, (tf.constant(0), images))
        return images

    def _apply_slot(self, images, op_indices, magnitudes, centres):
        # The batch split into groups, one per op, the geometric ops
        # together, one for the images without an op this slot; each group
        # transformed on its own, then stitched back. Every op takes an
        # empty batch, so a group no image chose costs a few empty kernels
        # (a `tf.cond` to skip it would cost more, in graph size).
        runs = [self._warp] + [self._op(PBA_OPS[index]) for index in _ALONE]
        groups = tf.gather(tf.constant(_GROUP_OF_OP), op_indices)
        parts = len(runs) + 1
        positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), groups, parts)
        inputs = [
            tf.dynamic_partition(values, groups, parts)
            for values in (images, op_indices, magnitudes, centres)
        ]
        outputs = [run(*(part[group] for part in inputs)) for group, run in enumerate(runs)]
        stitched = tf.dynamic_stitch(positions, outputs + [inputs[0][-1]])
        # The batch size too, when it is static (`drop_remainder`): the
        # slot loop needs the shape it started with.
        stitched.set_shape(images.shape)
        return stitched

    def _op(self, name):
        op = image_ops.OPS[name]
        options = dict(OP_OPTIONS.get(name, {}))
        if op.takes_fill_value:
            options["fill_value"] = self._unit_fill
        if op.takes_seed:
            # Cutout: its squares where the images' own draws put them.
            return lambda images, _, magnitudes, centres: image_ops.cutout_at(
                images, magnitudes, centres, **options
            )
        return lambda images, _, magnitudes, centres: op.function(images, magnitudes, **options)

    def _warp(self, images, op_indices, magnitudes, centres):
        # Each image's one geometric op as its affine matrix (the other ops'
        # parameters 0, as when the op runs alone; magnitudes prepared as
        # the op's function prepares them): one warp for all five.
        magnitudes = tf.clip_by_value(tf.cast(magnitudes, images.dtype), -1.0, 1.0)
        motion = {}
        for index in _GEOMETRIC:
            name = PBA_OPS[index]
            own = tf.where(op_indices == index, magnitudes, tf.zeros_like(magnitudes))
            motion.update(image_ops.OPS[name].motion(images, own, **OP_OPTIONS.get(name, {})))
        return warp.affine_warp(images, warp.affine_matrix(**motion), fill_value=self._unit_fill)

    def augment_batch(self, images, labels):
        """Apply the current policy, then `then`, then the final Cutout, to a batch: the map.

        Args:
            images: `(batch, height, width, channels)` floats in `value_range`
                (`[0, 1]` by default).
            labels: the batch's labels.

        Returns:
            `(images, labels)`, augmented.
        """
        hashed = draws.hashes(self.image_keys(images))
        centres = self._centres(hashed)
        low, high = self.value_range
        if (low, high) == (0.0, 1.0):
            augmented = self._apply(images, *self._plan(hashed), centres)
        else:
            unit = (images - low) / (high - low)
            augmented = self._apply(unit, *self._plan(hashed), centres) * (high - low) + low
        if self.then is not None:
            augmented, labels = tf.map_fn(
                lambda pair: self.then(*pair),
                (augmented, labels),
                fn_output_signature=(
                    tf.TensorSpec(augmented.shape[1:], augmented.dtype),
                    tf.TensorSpec(labels.shape[1:], labels.dtype),
                ),
            )
        if self.cutout:
            # PBA's pipeline ends, after the policy and pad-crop-flip, with a
            # Cutout of every image.
            augmented = image_ops.cutout_at(
                augmented,
                1.0,
                centres[:, _MAX_OPS],
                max_size=self.cutout,
                fill_value=self.fill_value,
            )
        return augmented, labels

    # tf.data would convert this with AutoGraph: needless, as it has no
    # Python control flow.
    @tf.autograph.experimental.do_not_convert
    def __call__(self, images, labels):
        images = tf.convert_to_tensor(images)
        labels = tf.convert_to_tensor(labels)
        if images.shape.rank != 4:
            raise ValueError(
                f"PBAAugment maps batches of shape (batch, height, width, channels), got "
                f"shape {images.shape}: map it after Dataset.batch, as "
                "kd_keras.data.pipeline does."
            )
        if not self.in_process:
            return self.augment_batch(images, labels)
        # Traced now, when the pipeline is built (the seed is drawn, `then`
        # and `fill_value` read), not in a tf.data thread; instantiated once
        # per process by the function runtime, not per epoch by tf.data.
        augment_batch = tf.function(self.augment_batch, autograph=False).get_concrete_function(
            tf.TensorSpec(images.shape, images.dtype), tf.TensorSpec(labels.shape, labels.dtype)
        )
        augmented, new_labels = tf.py_function(
            augment_batch, [images, labels], [images.dtype, labels.dtype]
        )
        augmented.set_shape(images.shape)
        new_labels.set_shape(labels.shape)
        return augmented, new_labels


class ScheduleCallback(keras.callbacks.Callback):
    """Keras callback: sets a `PBAAugment`'s epoch (and so its policy) at the start of each epoch.

    Keras `fit` starts each epoch's data iterator after `on_epoch_begin`, and
    tf.data only runs the map function once the iterator is read, so every
    image of epoch `e` is augmented with epoch `e`'s policy.

    Args:
        augment: the `kd_keras.augment.pba.PBAAugment` of the training pipeline.
        epochs: the run's length, to stretch a schedule made for another
            (None: use the schedule's epochs as they are).

    Returns:
        A `keras.callbacks.Callback`.

    Example:
    ```python
    model.fit(train, epochs=30, callbacks=[kd_keras.augment.pba.ScheduleCallback(augment, 30)])
    ```
    """

    def __init__(self, augment, epochs=None):
        super().__init__()
        self.augment = augment
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.augment.set_epoch(epoch, self.epochs)
