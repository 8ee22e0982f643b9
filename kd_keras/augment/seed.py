"""Seeds that differ per tf.distribute replica, so replicas draw different augmentations."""

import keras
import tensorflow as tf
from keras import ops

# Added to the seed once per replica index: far from any seed a user picks
# next to another (0, 1, 42, ...), so replica streams never collide.
REPLICA_STRIDE = 1_000_003


class ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A `keras.random.SeedGenerator` whose draws differ between tf.distribute replicas.

    Under a multi-replica strategy every replica reads the same (mirrored)
    seed state, so a plain `SeedGenerator` makes all replicas draw the same
    lambdas, boxes, warps and noise for their different images: a global
    batch of 8 replicas would carry 8 copies of one augmentation pattern.
    This generator offsets the seed by the replica's index in its sync group
    (which counts across workers), and is identical to `SeedGenerator` on one
    device (replica 0). Every kd_keras augmenter draws through one.

    Args:
        seed: initial seed (an int), or None for a random one.
        **kwargs: passed to `keras.random.SeedGenerator`.

    Returns:
        A seed generator for `keras.random` functions (`seed=generator`).

    Example:
    ```python
    generator = kd_keras.augment.ReplicaSeedGenerator(0)
    noise = keras.random.normal((4,), seed=generator)
    ```
    """

    def next(self, ordered=True):
        seed = super().next(ordered=ordered)
        replica = tf.distribute.get_replica_context()
        if replica is None:  # cross-replica context: one draw for all
            return seed
        index = ops.cast(replica.replica_id_in_sync_group, seed.dtype)
        return seed + ops.stack([index * REPLICA_STRIDE, ops.zeros_like(index)])
