"""PBA's graph-native batch map: the old map's outputs bit for bit, no Python in the dataset graph."""

import numpy as np
import pytest
import tensorflow as tf
from pba_reference import ReferencePBAAugment

from kd_keras.augment import pba
from kd_keras.augment.pba import draws

# Every op, each copy at its own level (3..9 and 0..9 in turn), always applied.
EVERY_OP = pba.Policy(np.full((15, 2), 10), np.arange(30).reshape(15, 2) % 10)
PYTHON_OPS = {"EagerPyFunc", "PyFunc", "PyFuncStateless"}


def rgb_images(count=80, size=20, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, size, size, 3)).astype("float32")


def mapped(augment, images, batch_size=32):
    """What tf.data's map over batches returns, concatenated (the last batch partial)."""
    labels = np.arange(len(images))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).map(augment)
    out, out_labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    np.testing.assert_array_equal(np.concatenate(out_labels), labels)
    return np.concatenate(out)


def dataset_ops(dataset):
    """Op types of a dataset's serialised graph, its functions' bodies included."""
    serialised = tf.raw_ops.DatasetToGraphV2(
        input_dataset=tf.data.experimental.to_variant(dataset),
        external_state_policy=1,  # IGNORE: the policy variables are read, not saved
    )
    graph = tf.compat.v1.GraphDef.FromString(serialised.numpy())
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return serialised, ops


@pytest.mark.parametrize(
    "policy, options, channels, epoch",
    [
        (pba.HAND_SET_POLICY, {}, 1, 0),
        (pba.HAND_SET_POLICY, {"cutout": 0.5, "fill_value": 0.25}, 3, 3),
        (EVERY_OP, {"fill_value": 0.25}, 1, 3),
        (EVERY_OP, {}, 3, 0),
        (pba.Policy.random(5), {"cutout": 0.25}, 1, 1),
    ],
)
def test_graph_map_is_the_old_map_bit_for_bit(digits, policy, options, channels, epoch):
    # The frozen old map, run eagerly (its own definition, without the
    # graph rewrites of the function runtime it ran in), draws the same
    # plans and squares and applies each op on its own group of images.
    images = digits.train[0][:72] if channels == 1 else rgb_images(72)
    new = pba.PBAAugment(policy, seed=11, **options)
    old = ReferencePBAAugment(policy, seed=11, **options)
    new.set_epoch(epoch)
    old.set_epoch(epoch)
    expected = np.concatenate(
        [
            old.augment_batch(tf.constant(images[start : start + 32]), tf.zeros(32, tf.int64))[0]
            for start in range(0, len(images), 32)
        ]
    )
    out = mapped(new, images)  # batches of 32, 32 and 8
    np.testing.assert_array_equal(out, expected)
    assert np.mean(np.any(out != images, axis=(1, 2, 3))) > 0.5


def test_every_op_runs_in_both_slots(digits):
    # The bit-for-bit test covers each op only where a plan chose it.
    augment = pba.PBAAugment(EVERY_OP, seed=11)
    op_indices, _ = augment.plan(augment.image_keys(digits.train[0][:96]))
    for slot in range(2):
        assert set(op_indices.numpy()[:, slot]) >= set(range(15)), slot


def test_outputs_do_not_depend_on_batching_or_epoch_order(digits):
    images = digits.train[0][:40]
    augment = pba.PBAAugment(pba.HAND_SET_POLICY, seed=2, cutout=0.5)
    augment.set_epoch(4)
    by_40 = mapped(augment, images, batch_size=40)
    by_5 = mapped(augment, images, batch_size=5)
    np.testing.assert_array_equal(by_5, by_40)
    # Epoch 4 again after epoch 5: the same draws, not a continued stream.
    augment.set_epoch(5)
    fifth = mapped(augment, images)
    augment.set_epoch(4)
    np.testing.assert_array_equal(mapped(augment, images), by_40)
    assert np.mean(np.any(fifth != by_40, axis=(1, 2, 3))) > 0.9


def test_batches_of_a_static_size_keep_it(digits):
    # drop_remainder=True gives batches of a static shape, which the map keeps.
    images = digits.train[0][:70]
    augment = pba.PBAAugment(EVERY_OP, seed=3, cutout=0.5)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(70)))
    dataset = dataset.batch(32, drop_remainder=True).map(augment)
    assert dataset.element_spec[0].shape == (32, 28, 28, 1)
    out = np.concatenate([x.numpy() for x, _ in dataset])
    np.testing.assert_array_equal(out, mapped(augment, images[:64]))


def test_policy_zeros_is_the_identity_in_tf_data(digits):
    images = digits.train[0][:40]
    np.testing.assert_array_equal(mapped(pba.PBAAugment(pba.Policy.zeros()), images), images)


def test_dataset_graph_has_no_python_function_and_runs_from_its_graph(digits):
    images = digits.train[0][:64]
    augment = pba.PBAAugment(pba.HAND_SET_POLICY, seed=4, cutout=0.5)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(64))).batch(32).map(augment)
    serialised, ops = dataset_ops(dataset)
    assert not ops & PYTHON_OPS, ops & PYTHON_OPS
    assert {"Fingerprint", "DynamicPartition", "DynamicStitch"} <= ops
    # The same pipeline rebuilt from its serialised graph gives the same batches.
    rebuilt = tf.data.experimental.from_variant(
        tf.raw_ops.DatasetFromGraph(graph_def=serialised), dataset.element_spec
    )
    for (x, y), (x_again, y_again) in zip(dataset, rebuilt):
        np.testing.assert_array_equal(x_again, x)
        np.testing.assert_array_equal(y_again, y)
    # The detector sees a Python function where there is one.
    in_process = pba.PBAAugment(pba.HAND_SET_POLICY, in_process=True)
    _, ops = dataset_ops(
        tf.data.Dataset.from_tensor_slices((images, np.arange(64))).batch(32).map(in_process)
    )
    assert ops & PYTHON_OPS


def test_in_process_runs_the_same_batch_function(digits):
    # Through tf.py_function, in the function runtime, whose graph optimiser
    # rewrites some arithmetic (x / 255 as x * (1 / 255), folded constants):
    # the same images to within a few float32 steps, as the old map was.
    images = digits.train[0][:32]
    graph = mapped(pba.PBAAugment(EVERY_OP, seed=8, cutout=0.5), images)
    in_process = mapped(pba.PBAAugment(EVERY_OP, seed=8, cutout=0.5, in_process=True), images)
    np.testing.assert_allclose(in_process, graph, rtol=0, atol=3e-6)
    assert np.any(in_process != graph)  # it is the other runtime that ran


def test_hashes_are_each_rows_own_fingerprint():
    keys = tf.constant([[7, 0, 123456789], [7, 2, -5], [-1, 9, 2**62]], tf.int64)
    hashed = draws.hashes(keys)
    assert {stream: tuple(value.shape) for stream, value in hashed.items()} == {
        stream: (3, count) for stream, count in draws.STREAMS.items()
    }
    for stream, count in draws.STREAMS.items():
        for row in range(3):
            for i in range(count):
                one = tf.concat([keys[row], tf.constant([stream, i], tf.int64)], axis=0)
                expected = tf.bitcast(tf.fingerprint(one[None]), tf.int64)[0]
                assert int(hashed[stream][row, i]) == int(expected)


def test_stateless_uniform_rows_is_tensorflows_philox():
    rng = np.random.default_rng(0)
    seeds = rng.integers(-(2**31), 2**31, size=(300, 2)).astype("int32")
    seeds[:4] = [[0, 0], [-1, -1], [2**31 - 1, -(2**31)], [1, 0]]
    expected = np.stack(
        [tf.random.stateless_uniform((1, 2), seed=tf.constant(seed))[0].numpy() for seed in seeds]
    )
    np.testing.assert_array_equal(draws.stateless_uniform_rows(tf.constant(seeds)), expected)
    in_graph = tf.function(draws.stateless_uniform_rows)(tf.constant(seeds))
    np.testing.assert_array_equal(in_graph, expected)
