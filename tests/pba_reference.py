"""The PBA batch map as it was before the graph-native rewrite (kd_keras 6d5fd9b), frozen.

The reference the graph-native `kd_keras.augment.pba.PBAAugment` is tested
against (`tests/test_pba_graph.py`) and benchmarked against
(`benchmarks/pba_pipeline.py`): the same plan, drawn by one hash call per
stream; each op run once per slot on the images that chose it
(`dynamic_partition` / `dynamic_stitch`, empty groups skipped with
`tf.cond`); Cutout's squares drawn by `keras.random.uniform` from each
image's own seed, one `tf.map_fn` step per image; the whole batch handed to
TensorFlow's function runtime through `tf.py_function`. Only its imports,
class name and docstring changed. Do not edit: it is the old behaviour.
"""

import keras
import numpy as np
import tensorflow as tf

from kd_keras.augment import ops as image_ops
from kd_keras.augment.pba import COPIES
from kd_keras.augment.pba import COUNT_PROBABILITIES
from kd_keras.augment.pba import OP_OPTIONS
from kd_keras.augment.pba import PARAMETER_MAX
from kd_keras.augment.pba import PBA_OPS
from kd_keras.augment.pba import Policy
from kd_keras.augment.pba import ScheduleCallback
from kd_keras.augment.pba import as_schedule
from kd_keras.augment.pba.policy import _whole

_SHAPE = (len(PBA_OPS), COPIES)
_ENTRIES = len(PBA_OPS) * COPIES
_MAX_OPS = len(COUNT_PROBABILITIES) - 1
_NO_OP = len(PBA_OPS)


class _GivenSeed(keras.random.SeedGenerator):
    # `kd_keras.augment.ops.cutout` takes its randomness as an int or a
    # SeedGenerator; Keras asks a SeedGenerator only for `next()`. This one
    # hands over an image's own stateless seed, so Cutout's square is as
    # reproducible as the rest of the policy. No state: nothing to create.

    def __init__(self, seed):
        self._seed = seed

    def next(self, ordered=True):
        return self._seed


# Streams of an image's draws, one per use.
_COUNT, _ORDER, _COINS, _SIGNS, _CUTOUT, _FINAL_CUTOUT = range(6)
_UNIFORM_BITS = 24


def _hashes(keys, stream, count):
    # Draw `i` of `stream` for an image is a hash of (its key, stream, i): a
    # counter-based generator, vectorised over the batch (TensorFlow's
    # stateless ops take one seed per call) and blind to the other images
    # of the batch. Returns `(batch, count)` int64.
    batch = tf.shape(keys)[0]
    counters = tf.stack(
        [tf.fill([count], tf.constant(stream, tf.int64)), tf.range(count, dtype=tf.int64)],
        axis=1,
    )
    rows = tf.concat(
        [
            tf.broadcast_to(keys[:, None, :], [batch, count, 3]),
            tf.broadcast_to(counters[None], [batch, count, 2]),
        ],
        axis=2,
    )
    hashes = tf.bitcast(tf.fingerprint(tf.reshape(rows, [-1, 5])), tf.int64)
    return tf.reshape(hashes, [batch, count])


def _uniform(keys, stream, count):
    # The top 24 bits of each hash: float32 in [0, 1), exactly.
    top = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(_hashes(keys, stream, count), 64 - _UNIFORM_BITS),
        2**_UNIFORM_BITS - 1,
    )
    return tf.cast(top, tf.float32) / 2**_UNIFORM_BITS


class ReferencePBAAugment:
    """`kd_keras.augment.pba.PBAAugment` as of 6d5fd9b: groups by op, runs batches through `tf.py_function`."""

    batched = True

    def __init__(self, schedule, seed=0, fill_value=0.0, then=None, cutout=0.0):
        self.schedule = schedule
        if seed is not None:
            seed = _whole(seed, "seed")
        self._seed = seed
        self.fill_value = float(fill_value)
        self.then = then
        if not 0.0 <= cutout <= 1.0:
            raise ValueError(
                f"cutout is the side of PBA's final square as a fraction of the image "
                f"side, in [0, 1], got {cutout}: use 0.5 (PBA's 16 px of 32) or 0."
            )
        self.cutout = float(cutout)
        self.epoch = tf.Variable(0, dtype="int64", trainable=False, name="pba_epoch")
        self._probability_levels = tf.Variable(
            tf.zeros(_SHAPE, "int32"), trainable=False, name="pba_probability_levels"
        )
        self._magnitude_levels = tf.Variable(
            tf.zeros(_SHAPE, "int32"), trainable=False, name="pba_magnitude_levels"
        )
        self.set_epoch(0)

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
        fingerprints = tf.bitcast(tf.fingerprint(images), tf.int64)
        batch = tf.shape(fingerprints)[:1]
        return tf.stack(
            [
                tf.fill(batch, tf.constant(self._resolved_seed(), tf.int64)),
                tf.fill(batch, self.epoch.read_value()),
                fingerprints,
            ],
            axis=1,
        )

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
        thresholds = tf.constant(np.cumsum(COUNT_PROBABILITIES)[:-1], tf.float32)
        count = tf.reduce_sum(
            tf.cast(_uniform(keys, _COUNT, 1) >= thresholds, tf.int32), axis=1, keepdims=True
        )
        order = tf.argsort(_uniform(keys, _ORDER, _ENTRIES), axis=1, stable=True)
        probabilities = (
            tf.cast(tf.gather(tf.reshape(self._probability_levels, [-1]), order), tf.float32)
            / PARAMETER_MAX
        )
        coins = _uniform(keys, _COINS, _ENTRIES) < probabilities
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
        flips = tf.gather(signed, op_indices) & (_uniform(keys, _SIGNS, _MAX_OPS) < 0.5)
        # In float64, so that the ops get level / 10 rounded once, to their
        # images' own precision.
        magnitudes = tf.cast(levels, tf.float64) / PARAMETER_MAX
        return op_indices, tf.where(flips, -magnitudes, magnitudes)

    def apply(self, images, op_indices, magnitudes, keys):
        """Apply a `plan`'s ops to a batch, slot by slot; `keys` seed Cutout's squares.

        Args:
            images: `(batch, height, width, channels)` floats in `[0, 1]`.
            op_indices: `(batch, 2)` from `plan`.
            magnitudes: `(batch, 2)` from `plan`.
            keys: `(batch, 3)` image keys, as given to `plan`.

        Returns:
            The augmented images.
        """
        cutout_seeds = tf.bitcast(_hashes(keys, _CUTOUT, _MAX_OPS), tf.int32)
        positions = tf.range(tf.shape(images)[0])
        for slot in range(_MAX_OPS):
            # One group per op (and one for "no op"): each op runs once, on
            # the images that chose it.
            groups = op_indices[:, slot]
            parts = _NO_OP + 1
            group_positions = tf.dynamic_partition(positions, groups, parts)
            group_images = tf.dynamic_partition(images, groups, parts)
            group_magnitudes = tf.dynamic_partition(magnitudes[:, slot], groups, parts)
            group_seeds = tf.dynamic_partition(cutout_seeds[:, slot], groups, parts)
            outputs = [
                self._op(name, group_images[index], group_magnitudes[index], group_seeds[index])
                for index, name in enumerate(PBA_OPS)
            ]
            images = tf.dynamic_stitch(group_positions, outputs + [group_images[_NO_OP]])
        return images

    def _op(self, name, images, magnitudes, seeds):
        op = image_ops.OPS[name]
        options = dict(OP_OPTIONS.get(name, {}))
        if op.takes_fill_value:
            options["fill_value"] = self.fill_value
        if op.takes_seed:
            # `op.function` draws from one seed per call: one call per image
            # keeps each image's draws its own.
            def run():
                return tf.map_fn(
                    lambda args: op.function(
                        args[0][None], args[1], seed=_GivenSeed(args[2]), **options
                    )[0],
                    (images, magnitudes, seeds),
                    fn_output_signature=images.dtype,
                )
        else:

            def run():
                return op.function(images, magnitudes, **options)

        # Most groups are empty (an op no image chose, or one the policy
        # never applies): skip them.
        return tf.cond(tf.size(magnitudes) > 0, run, lambda: images)

    def augment_batch(self, images, labels):
        """Apply the current policy, then `then`, to a batch: what the map function runs.

        Args:
            images: `(batch, height, width, channels)` floats in `[0, 1]`.
            labels: the batch's labels.

        Returns:
            `(images, labels)`, augmented.
        """
        keys = self.image_keys(images)
        augmented = self.apply(images, *self.plan(keys), keys)
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
            augmented = self._final_cutout(augmented, keys)
        return augmented, labels

    def _final_cutout(self, images, keys):
        # PBA's pipeline ends, after the policy and pad-crop-flip, with a
        # Cutout of every image: one square per image, drawn from its key.
        seeds = tf.bitcast(_hashes(keys, _FINAL_CUTOUT, 1), tf.int32)[:, 0]
        return tf.map_fn(
            lambda args: image_ops.cutout(
                args[0][None],
                1.0,
                max_size=self.cutout,
                fill_value=self.fill_value,
                seed=_GivenSeed(args[1]),
            )[0],
            (images, seeds),
            fn_output_signature=images.dtype,
        )

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
        # tf.data runs the graphs of its map functions several times slower
        # than TensorFlow's function runtime runs this one (many small ops,
        # conditionals, a loop; see benchmarks/pba_pipeline.py): hand each
        # batch over to that runtime. Traced now, when the pipeline is built
        # (the seed is drawn, `then` and `fill_value` read), not in a
        # tf.data thread.
        augment_batch = tf.function(self.augment_batch, autograph=False).get_concrete_function(
            tf.TensorSpec(images.shape, images.dtype), tf.TensorSpec(labels.shape, labels.dtype)
        )
        augmented, new_labels = tf.py_function(
            augment_batch, [images, labels], [images.dtype, labels.dtype]
        )
        augmented.set_shape(images.shape)
        new_labels.set_shape(labels.shape)
        return augmented, new_labels
