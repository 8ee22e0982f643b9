"""PBA's per-image randomness: hashes of each image's key, and Philox uniforms keyed per row.

Every draw PBA makes for an image is a function of the image's key
`(seed, epoch, fingerprint of the image's bytes)` alone, so that a run is
reproducible whatever order tf.data's parallel calls run in and whatever else
is in the image's batch. Draw `i` of a stream (`STREAMS`) is the fingerprint
of the row `(key, stream, i)`: a counter-based generator vectorised over the
batch, since TensorFlow's stateless random ops take one seed per call.

Cutout's square positions are `tf.random.stateless_uniform` draws seeded with
such hashes, as `kd_keras.augment.ops.cutout` makes them;
`stateless_uniform_rows` computes them for a whole batch of seeds at once,
bit for bit (TensorFlow's Philox on CPU and GPU, reproduced in integer ops).
"""

import numpy as np
import tensorflow as tf

# Streams of an image's draws, one per use, and how many draws each takes:
# the number of ops, the order of the 30 policy entries, their coins, the
# signs of the two slots' magnitudes, the seeds of the two slots' Cutout
# squares and of the final Cutout.
COUNT, ORDER, COINS, SIGNS, CUTOUT, FINAL_CUTOUT = range(6)
STREAMS = {COUNT: 1, ORDER: 30, COINS: 30, SIGNS: 2, CUTOUT: 2, FINAL_CUTOUT: 1}
UNIFORM_BITS = 24
# (stream, i) of every draw, streams in order.
_COUNTERS = np.array([(stream, i) for stream, count in STREAMS.items() for i in range(count)])
_STARTS = dict(zip(STREAMS, np.cumsum([0, *STREAMS.values()])))

# Philox-4x32-10 (Salmon et al. 2011) as TensorFlow's stateless ops run it.
_PHILOX_MULTIPLIERS = np.array([0xD2511F53, 0xCD9E8D57], np.uint64)
_PHILOX_KEY_STEP = np.array([0x9E3779B9, 0xBB67AE85], np.uint32)
_PHILOX_ROUNDS = 10
# TensorFlow scrambles a stateless seed into a key and counter with one
# Philox call under this key (`stateless_random_ops.cc`).
_SEED_SCRAMBLE_KEY = np.array([0x3EC8F720, 0x02461E29], np.uint32)


def image_keys(images, seed, epoch):
    """Return each image's key, `(batch, 3)` int64: `(seed, epoch, fingerprint of its bytes)`.

    Args:
        images: a batch of images.
        seed: int seed.
        epoch: int64 scalar tensor.

    Returns:
        The keys.

    Example:
    ```python
    keys = kd_keras.augment.pba.draws.image_keys(images, 0, tf.constant(3, tf.int64))
    ```
    """
    fingerprints = tf.bitcast(tf.fingerprint(images), tf.int64)
    batch = tf.shape(fingerprints)[:1]
    return tf.stack(
        [tf.fill(batch, tf.constant(seed, tf.int64)), tf.fill(batch, epoch), fingerprints],
        axis=1,
    )


def hashes(keys):
    """Return every stream's draws for each key, one `tf.fingerprint` for them all.

    Args:
        keys: `(batch, 3)` int64 image keys.

    Returns:
        A dict from stream (`COUNT`, `ORDER`, ...) to its `(batch, STREAMS[stream])`
        int64 hashes.

    Example:
    ```python
    draws = kd_keras.augment.pba.draws.hashes(keys)[kd_keras.augment.pba.draws.ORDER]
    ```
    """
    batch, count = tf.shape(keys)[0], len(_COUNTERS)
    rows = tf.concat(
        [
            tf.broadcast_to(keys[:, None, :], [batch, count, 3]),
            tf.broadcast_to(tf.constant(_COUNTERS, tf.int64)[None], [batch, count, 2]),
        ],
        axis=2,
    )
    table = tf.reshape(
        tf.bitcast(tf.fingerprint(tf.reshape(rows, [-1, 5])), tf.int64), [batch, count]
    )
    return {
        stream: table[:, _STARTS[stream] : _STARTS[stream] + size]
        for stream, size in STREAMS.items()
    }


def uniform(hashed):
    """Return the top 24 bits of int64 hashes as float32 in `[0, 1)`, exactly.

    Args:
        hashed: int64 hashes, e.g. a stream of `hashes`.

    Returns:
        float32 uniforms of the same shape.

    Example:
    ```python
    coins = kd_keras.augment.pba.draws.uniform(hashed[kd_keras.augment.pba.draws.COINS])
    ```
    """
    top = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(hashed, 64 - UNIFORM_BITS), 2**UNIFORM_BITS - 1
    )
    return tf.cast(top, tf.float32) / 2**UNIFORM_BITS


def seeds(hashed):
    """Return int64 hashes as the int32 seed pairs `tf.random` takes (their two halves).

    Args:
        hashed: int64 hashes of shape `shape`.

    Returns:
        int32 seeds of shape `shape + (2,)`.

    Example:
    ```python
    seeds = kd_keras.augment.pba.draws.seeds(hashed[kd_keras.augment.pba.draws.CUTOUT])
    ```
    """
    return tf.bitcast(hashed, tf.int32)


def stateless_uniform_rows(seeds):
    """Return, for each row of `seeds`, `tf.random.stateless_uniform((1, 2), seed=row)`.

    TensorFlow's stateless ops take one seed per call; this runs Philox for a
    whole batch of seeds in integer ops (as TensorFlow does on CPU and GPU:
    the seed scrambled into a key and counter, then one Philox block, its
    first two words turned into floats), so that per-image draws need no
    loop.

    Args:
        seeds: `(n, 2)` int32 seeds.

    Returns:
        `(n, 2)` float32 in `[0, 1)`.

    Example:
    ```python
    centres = kd_keras.augment.pba.draws.stateless_uniform_rows(tf.constant([[1, 2], [3, 4]]))
    ```
    """
    # A Philox counter is four 32-bit words (c0, c1, c2, c3), held here as
    # two (n, 2) columns: evens = (c0, c2), odds = (c1, c3). A seed's two
    # int64 values are its counter, low word first.
    words = tf.bitcast(tf.cast(seeds, tf.int64), tf.uint32)
    evens, odds = words[:, :, 0], words[:, :, 1]
    key = tf.broadcast_to(tf.constant(_SEED_SCRAMBLE_KEY), tf.shape(evens))
    evens, odds = _philox(evens, odds, key)
    # The scrambled key is words 0 and 1 of that block, the counter
    # (0, 0, word 2, word 3).
    key = tf.stack([evens[:, 0], odds[:, 0]], axis=1)
    zeros = tf.zeros_like(evens[:, :1])
    evens, odds = _philox(
        tf.concat([zeros, evens[:, 1:]], axis=1), tf.concat([zeros, odds[:, 1:]], axis=1), key
    )
    # Words 0 and 1 as floats in [0, 1): 23 random mantissa bits under the
    # exponent of 1.0, minus 1 (TensorFlow's Uint32ToFloat).
    bits = tf.stack([evens[:, 0], odds[:, 0]], axis=1)
    mantissas = tf.bitwise.bitwise_or(
        tf.bitwise.bitwise_and(bits, tf.constant(0x7FFFFF, tf.uint32)),
        tf.constant(0x3F800000, tf.uint32),
    )
    return tf.bitcast(mantissas, tf.float32) - 1.0


def _philox(evens, odds, key):
    # One Philox-4x32-10 block. A round multiplies c0 and c2 by the two
    # constants and mixes: (c0, c1, c2, c3) <- (hi(c2 M1) ^ c1 ^ k0,
    # lo(c2 M1), hi(c0 M0) ^ c3 ^ k1, lo(c0 M0)); the key steps between
    # rounds. A loop, not ten copies: tf.data builds a map function's
    # graph anew for every epoch's iterator, in time proportional to its size.
    multipliers = tf.constant(_PHILOX_MULTIPLIERS)
    step = tf.constant(_PHILOX_KEY_STEP)
    thirty_two = tf.constant(32, tf.uint64)

    def round_(index, evens, odds, key):
        products = tf.cast(evens, tf.uint64) * multipliers
        high = tf.cast(tf.bitwise.right_shift(products, thirty_two), tf.uint32)
        low = tf.cast(products, tf.uint32)
        evens = tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(tf.reverse(high, [1]), odds), key)
        return index + 1, evens, tf.reverse(low, [1]), key + step

    _, evens, odds, _ = tf.while_loop(
        lambda index, *_: index < _PHILOX_ROUNDS, round_, (tf.constant(0), evens, odds, key)
    )
    return evens, odds
