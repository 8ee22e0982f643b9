"""PBA policies, schedules and their tf.data application; the rolewise recipe and its commands."""

import collections
import itertools
import json
import math
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kd_keras
from kd_keras import recipes
from kd_keras.augment import ops as image_ops
from kd_keras.augment import pba
from kd_keras.recipes import build

NONE = len(pba.PBA_OPS)


def op_index(name):
    return pba.PBA_OPS.index(name)


def policy_of(entries):
    """A policy with `{(op, copy): (probability level, magnitude level)}` set, all else 0."""
    probabilities = np.zeros((15, 2), "int64")
    magnitudes = np.zeros((15, 2), "int64")
    for (name, copy), (probability, magnitude) in entries.items():
        probabilities[op_index(name), copy] = probability
        magnitudes[op_index(name), copy] = magnitude
    return pba.Policy(probabilities, magnitudes)


def plans(augment, count):
    """`count` plans of the current policy, for image keys (7, 0, i), as NumPy arrays."""
    keys = np.stack([np.full(count, 7), np.zeros(count), np.arange(count)], axis=1)
    op_indices, magnitudes = augment.plan(tf.constant(keys, tf.int64))
    return op_indices.numpy(), magnitudes.numpy()


def within_binomial(observed, probability, count, sigmas=4.5):
    return (
        abs(observed - probability)
        <= sigmas * math.sqrt(probability * (1 - probability) / count) + 1e-12
    )


def test_pba_ops_are_the_op_library_in_pba_order():
    assert pba.PBA_OPS == (
        "AutoContrast",
        "Equalize",
        "Invert",
        "Rotate",
        "Posterize",
        "Solarize",
        "Color",
        "Contrast",
        "Brightness",
        "Sharpness",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Cutout",
    )
    assert all(image_ops.OPS[name].name == name for name in pba.PBA_OPS)
    assert (pba.PROBABILITY_LEVELS, pba.MAGNITUDE_LEVELS) == (11, 10)
    assert pba.COUNT_PROBABILITIES == (0.2, 0.3, 0.5)


def test_flat_form_round_trips_in_its_documented_order():
    policy = pba.Policy.random(np.random.default_rng(0))
    flat = policy.flat()
    assert len(flat) == 60 and all(type(value) is int for value in flat)
    for i in range(15):
        for j in range(2):
            assert flat[4 * i + 2 * j] == policy.probabilities[i, j]
            assert flat[4 * i + 2 * j + 1] == policy.magnitudes[i, j]
    assert pba.Policy.from_flat(flat) == policy
    assert hash(pba.Policy.from_flat(flat)) == hash(policy)
    assert pba.Policy.from_flat([0] * 60) == pba.Policy.zeros() != policy


def test_policy_is_immutable_and_validated():
    policy = pba.Policy.zeros()
    with pytest.raises(ValueError):
        policy.probabilities[0, 0] = 3
    with pytest.raises(AttributeError):
        policy.probabilities = np.ones((15, 2))
    good = np.zeros((15, 2))
    for probabilities, magnitudes, message in [
        (np.full((15, 2), 11), good, "probability levels must be in 0..10"),
        (good, np.full((15, 2), 10), "magnitude levels must be in 0..9"),
        (np.full((15, 2), -1), good, "must be in 0..10"),
        (np.full((15, 2), 2.5), good, "whole numbers"),
        (np.zeros((14, 2)), good, "shape (15, 2)"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            pba.Policy(probabilities, magnitudes)
    with pytest.raises(ValueError, match="has 60 levels"):
        pba.Policy.from_flat([0] * 59)


def test_policy_json_is_readable_and_round_trips():
    policy = pba.Policy.random(3)
    entries = policy.to_json()
    assert len(entries) == 30
    assert entries[6] == {
        "op": "Rotate",
        "probability": int(policy.probabilities[3, 0]),
        "magnitude": int(policy.magnitudes[3, 0]),
    }
    assert pba.Policy.from_json(json.loads(json.dumps(entries))) == policy
    # Any order: an op's copies are taken in the order they appear.
    assert pba.Policy.from_json(entries[::-1]) == pba.Policy(
        policy.probabilities[:, ::-1], policy.magnitudes[:, ::-1]
    )
    with pytest.raises(ValueError, match="Cutout do not|Cutout does not"):
        pba.Policy.from_json(entries[:-1])
    with pytest.raises(ValueError, match="more than 2 times"):
        pba.Policy.from_json(entries + entries[:1])


def test_number_of_applied_ops_follows_the_count_distribution():
    augment = pba.PBAAugment(pba.Policy(np.full((15, 2), 10), np.full((15, 2), 5)))
    op_indices, _ = plans(augment, 4000)
    applied = (op_indices != NONE).sum(axis=1)
    # With every probability 1, the first `count` shuffled entries apply.
    assert np.all(op_indices[applied == 1, 1] == NONE)
    for count, probability in enumerate(pba.COUNT_PROBABILITIES):
        assert within_binomial(np.mean(applied == count), probability, 4000), count
    # ... each of them one of the 30 entries (15 ops twice) with equal chance.
    chosen = np.bincount(op_indices[op_indices != NONE], minlength=15)
    for frequency in chosen / chosen.sum():
        assert within_binomial(frequency, 1 / 15, chosen.sum())


def exact_outcomes(entries):
    """P(sequence of applied (op, magnitude level)) by enumerating PBA's apply_policy."""
    outcomes = collections.defaultdict(float)
    for order in itertools.permutations(range(len(entries))):
        for count, count_probability in enumerate(pba.COUNT_PROBABILITIES):
            for coins in itertools.product([False, True], repeat=len(entries)):
                weight = count_probability / math.factorial(len(entries))
                applied, remaining = [], count
                for position, entry in enumerate(order):
                    _, probability, _ = entries[entry]
                    weight *= probability if coins[position] else 1 - probability
                    if remaining and coins[position]:
                        applied.append((entries[entry][0], entries[entry][2]))
                        remaining -= 1
                outcomes[tuple(applied)] += weight
    return outcomes


def test_applied_ops_match_a_brute_force_of_pba_apply_policy():
    levels = {
        ("Rotate", 0): (5, 3),
        ("Rotate", 1): (3, 7),
        ("Invert", 0): (10, 2),
        ("Cutout", 1): (2, 9),
    }
    augment = pba.PBAAugment(policy_of(levels))
    expected = exact_outcomes([(op_index(name), p / 10, m) for (name, _), (p, m) in levels.items()])
    assert math.isclose(sum(expected.values()), 1.0)
    count = 4000
    op_indices, magnitudes = plans(augment, count)
    observed = collections.Counter(
        tuple(
            (int(op), int(round(abs(m) * 10)))
            for op, m in zip(row_ops, row_magnitudes)
            if op != NONE
        )
        for row_ops, row_magnitudes in zip(op_indices, magnitudes)
    )
    assert set(observed) <= set(expected)
    for outcome, probability in expected.items():
        assert within_binomial(observed[outcome] / count, probability, count), outcome
    # Rotate is signed: either direction, equally often; Invert and Cutout are not.
    rotations = magnitudes[op_indices == op_index("Rotate")]
    assert within_binomial(np.mean(rotations < 0), 0.5, len(rotations))
    assert np.all(magnitudes[np.isin(op_indices, [op_index("Invert"), op_index("Cutout")])] > 0)


def test_probability_zero_changes_nothing(digits):
    augment = pba.PBAAugment(pba.Policy.zeros())
    images, labels = digits.train[0][:64], digits.train[1][:64]
    out, out_labels = augment.augment_batch(images, labels)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(out_labels, labels)
    op_indices, _ = plans(augment, 200)
    assert np.all(op_indices == NONE)
    # `then` runs after the policy, on each image (turned upside down here).
    chained = pba.PBAAugment(
        pba.Policy.zeros(), then=lambda image, label: (tf.reverse(image, [0]), label + 1)
    )
    out, out_labels = chained.augment_batch(images[:3], np.array([3, 5, 7]))
    np.testing.assert_array_equal(out, images[:3, ::-1])
    np.testing.assert_array_equal(out_labels, [4, 6, 8])
    with pytest.raises(ValueError, match="got shape \\(28, 28, 1\\): map it after Dataset.batch"):
        augment(images[0], labels[0])


def augmented_with_plans(augment, images, batch_size=16):
    """Each image as tf.data's map over batches returns it, with the image's own plan."""
    labels = np.zeros(len(images), "int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).map(augment)
    augmented = np.concatenate([batch.numpy() for batch, _ in dataset])
    op_indices, magnitudes = augment.plan(augment.image_keys(images))
    return list(zip(augmented, op_indices.numpy(), magnitudes.numpy()))


def test_applied_ops_are_the_op_library_at_level_over_ten():
    # Every op but Cutout (random: its own test) always applies, each at
    # its own level; what tf.data returns must be the planned ops of
    # kd_keras.augment.ops, in order, at magnitude +-level / 10.
    names = [name for name in pba.PBA_OPS if name != "Cutout"]
    levels = {name: 1 + index % 9 for index, name in enumerate(names)}
    augment = pba.PBAAugment(
        policy_of({(name, 0): (10, level) for name, level in levels.items()}), fill_value=0.25
    )
    rng = np.random.default_rng(1)
    # Away from 0 and 1, so that AutoContrast has something to stretch.
    images = (rng.integers(20, 230, size=(60, 12, 12, 3)) / 255).astype("float32")
    seen = collections.Counter()
    for image, (augmented, op_indices, magnitudes) in zip(
        images, augmented_with_plans(augment, images)
    ):
        expected = image[None]
        for op, magnitude in zip(op_indices, magnitudes):
            if op == NONE:
                continue
            name = pba.PBA_OPS[op]
            assert abs(magnitude) == levels[name] / 10
            options = dict(pba.OP_OPTIONS.get(name, {}))
            if image_ops.OPS[name].takes_fill_value:
                options["fill_value"] = 0.25
            expected = image_ops.OPS[name].function(expected, magnitude, **options)
            seen[name] += 1
        np.testing.assert_allclose(augmented, expected[0], atol=1e-5)
    assert set(seen) == set(names), seen


def test_every_op_runs_on_one_row_signals():
    # MNIST-1D's (1, 40, 1) signals: a policy using every op (Sharpness used
    # to fail on a single row) maps batches in tf.data; Sharpness, Color and
    # ShearX leave one-row, one-channel signals unchanged.
    augment = pba.PBAAugment(
        policy_of({(name, 0): (10, 5) for name in pba.PBA_OPS}), fill_value=0.5
    )
    rng = np.random.default_rng(0)
    signals = rng.uniform(0.1, 0.9, size=(64, 1, 40, 1)).astype("float32")
    results = augmented_with_plans(augment, signals)
    assert {pba.PBA_OPS[op] for _, ops, _ in results for op in ops if op != NONE} == set(
        pba.PBA_OPS
    )
    for signal, (augmented, _, _) in zip(signals, results):
        assert augmented.shape == signal.shape and np.all(np.isfinite(augmented))
    for name in ("Sharpness", "Color", "ShearX"):
        np.testing.assert_array_equal(
            image_ops.OPS[name].function(signals, 0.9).numpy(), signals, err_msg=name
        )


def test_value_range_maps_inputs_onto_the_ops_range_and_back():
    # Standardised inputs (MNIST-1D) in [low, high]: the same policy, draws
    # and fill as on the inputs mapped onto [0, 1], mapped back.
    low, high = -5.5, 4.5
    policy = policy_of({(name, 0): (6, 5) for name in pba.PBA_OPS})
    rng = np.random.default_rng(2)
    unit = rng.uniform(0.05, 0.95, size=(48, 1, 40, 1)).astype("float32")
    labels = np.zeros(48, "int32")
    on_unit = pba.PBAAugment(policy, seed=3, fill_value=0.55, cutout=0.5)
    ranged = pba.PBAAugment(
        policy,
        seed=3,
        fill_value=low + 0.55 * (high - low),
        cutout=0.5,
        value_range=(low, high),
    )
    assert ranged.input_range == (low, high) and on_unit.input_range == (0.0, 1.0)
    inputs = unit * (high - low) + low
    expected = on_unit.augment_batch(unit, labels)[0].numpy()
    # The draws hash each image's bytes: same keys for both runs.
    keys = on_unit.image_keys(unit)
    plan = on_unit.plan(keys)
    assert np.mean(plan[0].numpy() != NONE) > 0.5
    ranged.image_keys = lambda images: keys
    augmented = ranged.augment_batch(inputs, labels)[0].numpy()
    assert not np.allclose(augmented, inputs)
    np.testing.assert_allclose(augmented, expected * (high - low) + low, atol=1e-4)
    for bad in ((1.0, 1.0), (0.0, float("inf")), (0.0,), "ab"):
        with pytest.raises(ValueError, match="value_range must be"):
            pba.PBAAugment(policy, value_range=bad)


def test_translation_is_pbas_level_in_pixels_of_32():
    images = np.zeros((8, 32, 32, 1), "float32")
    for k in range(8):
        images[k, 2 + k : 6 + k, 10:14] = 1.0
    augment = pba.PBAAugment(policy_of({("TranslateX", 0): (10, 8)}))
    shifted = 0
    for image, (augmented, op_indices, magnitudes) in zip(
        images, augmented_with_plans(augment, images)
    ):
        if op_indices[0] != NONE:
            shift = 8 * int(np.sign(magnitudes[0]))
            np.testing.assert_allclose(augmented, np.roll(image, shift, axis=1), atol=1e-6)
            shifted += 1
    assert shifted > 0


def test_cutout_fills_one_square_of_the_level_size():
    images = (np.full((24, 32, 32, 3), 0.5) + np.arange(24)[:, None, None, None] / 1000).astype(
        "float32"
    )
    augment = pba.PBAAugment(policy_of({("Cutout", 0): (10, 8)}))
    sides = []
    for image, (augmented, op_indices, _) in zip(images, augmented_with_plans(augment, images)):
        holes = np.all(augmented == 0.0, axis=-1)
        np.testing.assert_array_equal(augmented[~holes], image[~holes])
        if op_indices[0] == NONE:
            assert not holes.any()
            continue
        rows, cols = np.nonzero(holes.any(axis=1))[0], np.nonzero(holes.any(axis=0))[0]
        # One axis-aligned rectangle, clipped at the borders.
        assert holes.sum() == len(rows) * len(cols)
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        sides += [len(rows), len(cols)]
    # Side 0.8 * 20 = 16 pixels of 32 (PBA's 2 * level); smaller only at a border.
    assert max(sides) == 16 and min(sides) >= 8


def test_draws_are_reproducible_and_new_each_epoch(digits):
    images = digits.train[0][:32]
    augment = pba.PBAAugment(pba.HAND_SET_POLICY, seed=0)
    train = kd_keras.data.pipeline((images, np.zeros(32, "int32")), 32, augment=augment)

    def in_order(batch):
        # Sorted by content: the order of the (reshuffled) batch does not matter.
        return batch[np.lexsort(batch.reshape(len(batch), -1).T)]

    def epoch():
        return in_order(next(iter(train))[0].numpy())

    first = epoch()
    assert not np.array_equal(first, in_order(images))
    np.testing.assert_array_equal(first, epoch())
    # An image's draws are its own: the same in batches of 8, in another order.
    again = pba.PBAAugment(pba.HAND_SET_POLICY, seed=0)
    eights = np.concatenate(
        [
            again.augment_batch(images[start : start + 8][::-1], np.zeros(8, "int32"))[0]
            for start in range(0, 32, 8)
        ]
    )
    # (Batched kernels may round differently for 8 images and 32: 1e-6.)
    np.testing.assert_allclose(in_order(eights), first, atol=1e-5)
    augment.set_epoch(1)
    assert not np.array_equal(first, epoch())
    other = pba.PBAAugment(pba.HAND_SET_POLICY, seed=1)
    assert not np.array_equal(augment.image_keys(images[:1]), other.image_keys(images[:1]))


def test_explore_stays_on_the_grid_with_pbas_move_distribution():
    rng = np.random.default_rng(0)
    starts = {
        "edges": pba.Policy(np.full((15, 2), 10), np.zeros((15, 2))),
        "middle": pba.Policy(np.full((15, 2), 5), np.full((15, 2), 4)),
    }
    for start in starts.values():
        draws = 400
        children = np.array([start.explore(rng).flat() for _ in range(draws)])
        parent = np.array(start.flat())
        tops = np.tile([10, 9], 30)
        assert children.min() >= 0 and np.all(children <= tops)
        for position in (0, 1):  # probabilities, magnitudes
            top, level = int(tops[position]), int(parent[position])
            values = children[:, position::2].reshape(-1)
            for value in range(top + 1):
                # Resample (0.2) uniformly, else shift by 0..3, down or up, clipped.
                expected = 0.2 / (top + 1) + 0.8 * sum(
                    0.25
                    * 0.5
                    * ((max(0, level - amount) == value) + (min(top, level + amount) == value))
                    for amount in range(4)
                )
                assert within_binomial(np.mean(values == value), expected, len(values)), (
                    level,
                    value,
                )
    fixed = starts["middle"].explore(rng, resample_probability=0.0).flat()
    assert np.max(np.abs(np.array(fixed) - starts["middle"].flat())) <= 3
    with pytest.raises(ValueError, match="resample_probability"):
        starts["middle"].explore(rng, resample_probability=1.5)


def test_schedule_policy_at_stretching_and_history():
    a, b, c = (pba.Policy.random(seed) for seed in range(3))
    schedule = pba.Schedule([(0, a), (3, b), (7, c)], epochs=10)
    assert [schedule.policy_at(e) for e in (0, 2, 3, 6, 7, 9)] == [a, a, b, b, c, c]
    # A 20-epoch run uses epoch e // 2 of the 10-epoch schedule (PBA's stretch).
    assert [schedule.policy_at(e, epochs=20) for e in (5, 6, 13, 14)] == [a, b, b, c]
    history = [(3, b.flat()), (0, a.flat()), (3, c.flat()), (5, c.flat()), (8, a)]
    assert pba.Schedule.from_history(history, epochs=10) == pba.Schedule(
        [(0, a), (3, c), (8, a)], epochs=10
    )
    with pytest.raises(ValueError, match="start at epoch 0"):
        pba.Schedule.from_history([(2, a.flat())])
    with pytest.raises(ValueError, match="increase strictly"):
        pba.Schedule([(0, a), (5, b), (5, c)])
    with pytest.raises(ValueError, match="must start at epoch 0"):
        pba.Schedule([(1, a)])
    with pytest.raises(ValueError, match="made for 5 epochs"):
        pba.Schedule([(0, a), (5, b)], epochs=5)


def test_schedule_file_round_trips(tmp_path):
    schedule = pba.Schedule([(0, pba.Policy.random(0)), (4, pba.Policy.random(1))], epochs=12)
    path = schedule.save(tmp_path / "schedule.json")
    content = json.loads(path.read_text())
    assert content["format"] == "kd_keras.pba_schedule" and content["version"] == 1
    assert content["ops"] == list(pba.PBA_OPS) and content["epochs"] == 12
    assert [entry["start_epoch"] for entry in content["schedule"]] == [0, 4]
    assert pba.Schedule.load(path) == schedule
    assert pba.as_schedule(str(path)) == schedule
    assert not list(tmp_path.glob("*.partial"))
    constant = pba.Schedule.constant(pba.HAND_SET_POLICY)
    assert pba.Schedule.load(constant.save(tmp_path / "constant.json")) == constant


def _valid_content():
    return pba.Schedule([(0, pba.Policy.zeros()), (2, pba.HAND_SET_POLICY)], epochs=5).to_json()


def _edited(change):
    content = _valid_content()
    change(content)
    return json.dumps(content)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"format": "kd_keras.pba_schedule", ', "is not valid JSON"),
        ("[1, 2]", "a schedule is a JSON object"),
        (_edited(lambda c: c.update(format="pba")), "format is 'pba'"),
        (_edited(lambda c: c.update(version=2)), "schedule version 2"),
        (_edited(lambda c: c["ops"].append("Blur")), "unknown op 'Blur' in ops"),
        (_edited(lambda c: c["ops"].remove("Invert")), "ops lacks Invert"),
        (
            _edited(lambda c: c["schedule"][1]["policy"][0].update(op="FlipLR")),
            "unknown op 'FlipLR'",
        ),
        (
            _edited(lambda c: c["schedule"][0]["policy"][5].update(probability=11)),
            "schedule[0].policy[5] (Invert): probability level 11",
        ),
        (
            _edited(lambda c: c["schedule"][1]["policy"][6].update(magnitude=10)),
            "magnitude level 10 is not a whole number in 0..9",
        ),
        (
            _edited(lambda c: c["schedule"][1]["policy"][6].update(magnitude=2.5)),
            "magnitude level 2.5",
        ),
        (_edited(lambda c: c["schedule"][1]["policy"].pop()), "exactly 2 times"),
        (_edited(lambda c: c["schedule"].reverse()), "increase strictly, got 0 after 2"),
        (
            _edited(lambda c: c["schedule"].append(dict(c["schedule"][1]))),
            "start epochs must increase strictly, got 2 after 2",
        ),
        (
            _edited(lambda c: c["schedule"].insert(1, dict(c["schedule"][1], start_epoch=4))),
            "got 2 after 4",
        ),
        (_edited(lambda c: c["schedule"][0].update(start_epoch=1)), "must start at epoch 0"),
        (
            _edited(lambda c: c["schedule"][1].update(start_epoch=-2)),
            "start_epoch must be a whole number",
        ),
        (_edited(lambda c: c.update(schedule=[])), "non-empty list"),
        (_edited(lambda c: c.update(epochs=2)), "made for 2 epochs"),
        (_edited(lambda c: c.update(epochs=0)), "epochs must be a whole number >= 1"),
    ],
)
def test_malformed_schedule_files_fail_with_one_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        pba.Schedule.load(path)
    assert str(path) in str(error.value) and message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_missing_schedule_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist: check the path"):
        pba.Schedule.load(tmp_path / "missing.json")


class InvertedFraction(keras.Model):
    """A linear model whose training steps only record the fraction of mostly bright images."""

    def __init__(self):
        inputs = keras.Input((8, 8, 1))
        super().__init__(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))

    def train_step(self, data):
        x, y = data
        bright = tf.reduce_mean(x, axis=[1, 2, 3]) > 0.5
        metrics = self.compute_metrics(x, y, self(x))
        return {**metrics, "inverted": tf.reduce_mean(tf.cast(bright, "float32"))}


class PerBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = collections.defaultdict(list)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[self.epoch].append(float(logs["inverted"]))


def test_train_teacher_switches_policies_between_epochs_of_fit():
    # Dark images, each distinct; epoch 1's policy inverts 80% of them. The
    # epoch callback is train_teacher's own: none is passed.
    images = np.full((64, 8, 8, 1), 0.1, "float32")
    images[:, 0, 0, 0] += np.arange(64) / 1000
    invert = policy_of({("Invert", 0): (10, 0)})
    augment = pba.PBAAugment(
        pba.Schedule([(0, pba.Policy.zeros()), (1, invert), (2, pba.Policy.zeros())])
    )
    recorder = PerBatch()
    kd_keras.train_teacher(
        InvertedFraction(),
        (images, np.arange(64) % 4),
        epochs=3,
        batch_size=8,
        augment=augment,
        callbacks=[recorder],
        verbose=0,
    )
    assert [len(batches) for batches in recorder.epochs.values()] == [8, 8, 8]
    assert recorder.epochs[0] == [0.0] * 8 and recorder.epochs[2] == [0.0] * 8
    assert min(recorder.epochs[1]) > 0 and 0.6 < np.mean(recorder.epochs[1]) < 0.95
    assert int(augment.epoch.numpy()) == 2 and augment.policy == pba.Policy.zeros()


def test_rolewise_recipe(tmp_path):
    assert "rolewise" in recipes.names()
    assert "policy" in recipes.options("rolewise") and "policy" not in recipes.options("kd")
    config = recipes.get("rolewise")
    assert config["student_loss_weight"] == 0.1 and config["distillation_loss_weights"] == [1.0]
    assert config["distillation_losses"][0]["temperature"] == 4.0 and config["augmenter"] is None
    augment = build.host_augment(config)
    assert augment.schedule == pba.Schedule.constant(pba.HAND_SET_POLICY)
    (callback,) = build.callbacks(config, 30, augment)
    assert callback.augment is augment and callback.epochs == 30
    schedule = pba.Schedule([(0, pba.Policy.random(0)), (1, pba.Policy.random(1))], epochs=2)
    schedule.save(tmp_path / "s.json")
    from_file = build.host_augment(recipes.get("rolewise", {"policy": str(tmp_path / "s.json")}))
    assert from_file.schedule == schedule
    assert build.host_augment(recipes.get("rolewise", {"policy": schedule})).schedule == schedule


def kd_keras_command(*args, cwd):
    # The command of the kd_keras under test, run as the console script runs it.
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PYTHONPATH": str(pathlib.Path(kd_keras.__file__).resolve().parent.parent),
    }
    return subprocess.run(
        [sys.executable, "-m", "kd_keras.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.large
def test_two_stage_commands(tmp_path):
    teacher_schedule = pba.Schedule.constant(policy_of({("Rotate", 0): (5, 3)}))
    student_schedule = pba.Schedule([(0, pba.Policy.zeros()), (1, pba.HAND_SET_POLICY)], epochs=2)
    teacher_schedule.save(tmp_path / "teacher_schedule.json")
    student_schedule.save(tmp_path / "student_schedule.json")
    result = kd_keras_command(
        # One epoch may leave small_cnn near chance: the plumbing is under test, not the teacher.
        "train-teacher",
        "--model=small_cnn",
        "--epochs=1",
        "--out=teacher.keras",
        "--policy=teacher_schedule.json",
        "--verbose=0",
        "--allow_weak_teacher",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "teacher.json").read_text())
    assert card["policy"] == "teacher_schedule.json"
    result = kd_keras_command(
        "distill",
        "--recipe=rolewise",
        "--policy=student_schedule.json",
        "--epochs=1",
        "--teacher=teacher.keras",
        "--export=keras",
        "--out=run",
        "--verbose=0",
        "--allow_weak_teacher",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert pba.Schedule.load(tmp_path / "run" / "pba_schedule.json") == student_schedule
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["recipe"] == "rolewise"


@pytest.mark.large
def test_policy_flag_needs_a_recipe_with_a_policy(tmp_path):
    result = kd_keras_command(
        "distill", "--recipe=kd", "--policy=s.json", "--out=run", cwd=tmp_path
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("kd-keras: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "--policy is for recipes with a PBA policy (rolewise); recipe kd has none" in errors[0]
    assert not (tmp_path / "run").exists()


def test_pbas_final_cutout_cuts_one_square_of_every_image():
    # PBA's pipeline always ends with a Cutout (16 px of 32): here half the side.
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 1.0, size=(32, 16, 16, 1)).astype("float32")
    labels = np.arange(32)
    augment = pba.PBAAugment(pba.Policy.zeros(), seed=3, cutout=0.5, fill_value=0.0)
    out = augment.augment_batch(tf.constant(images), tf.constant(labels))[0].numpy()
    again = augment.augment_batch(tf.constant(images), tf.constant(labels))[0].numpy()
    np.testing.assert_array_equal(out, again)  # keyed by seed, epoch and image
    sides = []
    for before, after in zip(images[..., 0], out[..., 0]):
        cut = after != before
        assert np.all(after[cut] == 0.0)
        rows, cols = np.flatnonzero(cut.any(1)), np.flatnonzero(cut.any(0))
        # One axis-aligned square of side 8, clipped at the borders.
        assert cut.sum() == len(rows) * len(cols) and 1 <= len(rows) <= 8 and len(cols) <= 8
        sides.append(len(rows))
    assert (
        max(sides) == 8
        and len({tuple(np.flatnonzero(c.any(1))) for c in (out != images)[..., 0]}) > 4
    )
    with pytest.raises(ValueError, match="cutout is the side of PBA's final square"):
        pba.PBAAugment(pba.Policy.zeros(), cutout=16)
