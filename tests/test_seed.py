import keras
import numpy as np
import tensorflow as tf

import kd_keras


def test_one_device_draws_exactly_what_a_plain_seed_generator_draws():
    ours = kd_keras.augment.ReplicaSeedGenerator(5)
    plain = keras.random.SeedGenerator(5)
    for _ in range(3):
        np.testing.assert_array_equal(
            keras.random.uniform((6,), seed=ours), keras.random.uniform((6,), seed=plain)
        )


def test_the_seed_is_offset_by_the_replica_index():
    # One logical device here, so replica 0, which keeps the plain seed;
    # test_strategy checks that two replicas draw different views.
    strategy = kd_keras.strategy.get("mirrored")
    with strategy.scope():
        generator = kd_keras.augment.ReplicaSeedGenerator(5)
    seeds = strategy.experimental_local_results(strategy.run(tf.function(generator.next)))
    np.testing.assert_array_equal(seeds[0], [5, 0])
    # Cross-replica context (outside strategy.run): no offset either.
    np.testing.assert_array_equal(generator.next(), [5, 1])
