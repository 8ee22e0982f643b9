"""PBA: augmentation policies on integer grids, schedules of them over epochs, applied in tf.data.

Population Based Augmentation (Ho et al. 2019) describes an augmentation
agent as a *policy*: each of 15 image ops present twice, each copy with a
probability level `0..10` (probability `level / 10`) and a magnitude level
`0..9`; and a *schedule*: the policy as a function of the epoch, found by
population-based training. Role-wise distillation (Fu et al.) uses one
schedule for the teacher's training and another for the student's
distillation (METHODS.md section 6).

- `Policy`: an immutable policy; its flat form (60 ints) is what a search
  passes around, its JSON form what people read.
- `Schedule`: policies by start epoch, saved as versioned JSON.
- `PBAAugment`: the `(images, labels) -> (images, labels)` tf.data map
  function over batches that applies the schedule's current policy to each
  image as PBA's `apply_policy` does, with `PBAAugment.callback()` moving it
  from epoch to epoch.

Each op is the single implementation of `kd_keras.augment.ops`, called with
magnitude `level / 10` (PBA's `level / PARAMETER_MAX`), negated at random for
the ops `kd_keras.augment.ops` marks as signed. Where our ops' ranges differ
from those of PBA's `augmentation_transforms.py` (CIFAR, 32 x 32 pixels):

- Rotate (`3 * level` degrees), ShearX/Y (factor `0.03 * level`), Solarize
  (threshold `256 - int(25.6 * level)`) and Cutout (side `2 * level` pixels
  of 32, i.e. `level / 16` of the side) match. Our shears and rotations are
  about the image centre, PIL's shears about the top-left corner.
- TranslateX/Y: PBA's `level` pixels of 32, reproduced here as `level / 32`
  of the side (`max_translation=10 / 32`; the op's own default reaches 45%).
- Posterize: PBA keeps `4 - int(0.4 * level)` bits (4 down to 1); ours keeps
  `8 - round(0.4 * level)` (8 down to 4).
- Color, Contrast, Brightness, Sharpness: PBA's factor is
  `0.1 + 0.18 * level` (level 5 is about the identity); ours is
  `1 +- 0.09 * level` with a random sign (level 0 is the identity).
- Fill: PBA fills pixels moved in (and Cutout's square) with the data set's
  mean colour; here with `fill_value` (0 by default, the digits' background).

PBA's CIFAR pipeline then pads, crops and flips, and cuts out a 16-pixel
square; `then` chains such a standard augmentation after the policy.

References:
    Ho, Liang, Stoica, Abbeel, Chen. Population Based Augmentation: Efficient
    Learning of Augmentation Policy Schedules, ICML 2019 (github.com/arcelien/pba);
    Fu et al. Role-Wise Data Augmentation for Knowledge Distillation,
    arXiv:2004.08861 (seed 000).
"""

import bisect
import json
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from kd_keras.augment import ops as image_ops

PBA_OPS = (
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
PROBABILITY_LEVELS = 11
MAGNITUDE_LEVELS = 10
# P(number of ops applied to an image = 0, 1, 2), PBA's "cifar10" setting.
COUNT_PROBABILITIES = (0.2, 0.3, 0.5)
COPIES = 2
# PBA's PARAMETER_MAX: probability level p means p / 10, magnitude level m
# means m / 10 of an op's range.
PARAMETER_MAX = 10
RESAMPLE_PROBABILITY = 0.2
MAX_SHIFT = 3
SCHEDULE_FORMAT = "kd_keras.pba_schedule"
SCHEDULE_VERSION = 1
# Ranges passed to the ops where PBA's differ from the ops' defaults and the
# op can take PBA's (see the module docstring).
OP_OPTIONS = {
    "TranslateX": {"max_translation": 10 / 32},
    "TranslateY": {"max_translation": 10 / 32},
}

_SHAPE = (len(PBA_OPS), COPIES)
_FLAT_SIZE = len(PBA_OPS) * COPIES * 2
_ENTRIES = len(PBA_OPS) * COPIES
_MAX_OPS = len(COUNT_PROBABILITIES) - 1
# Op index of an empty slot.
_NO_OP = len(PBA_OPS)


def _levels(values, levels, what):
    try:
        array = np.asarray(values, dtype="float64")
    except (TypeError, ValueError):
        raise ValueError(f"{what} levels must be numbers, got {values!r}.") from None
    if array.shape != _SHAPE:
        raise ValueError(
            f"{what} levels must have shape {_SHAPE} (op, copy), got {array.shape}."
        )
    if not np.all(array == np.round(array)):
        raise ValueError(f"{what} levels must be whole numbers, got {values!r}.")
    if array.min() < 0 or array.max() > levels - 1:
        raise ValueError(
            f"{what} levels must be in 0..{levels - 1}, got values from "
            f"{array.min():g} to {array.max():g}."
        )
    array = array.astype("int64")
    array.setflags(write=False)
    return array


def _whole(value, what, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be a whole number, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}.")
    return int(value)


class Policy:
    """An immutable PBA policy: a probability and a magnitude level for two copies of each op.

    `probabilities[i, j]` (levels `0..10`, probability `level / 10`) and
    `magnitudes[i, j]` (levels `0..9`, magnitude `level / 10` of the op's
    range) belong to copy `j` of op `PBA_OPS[i]`. Policies compare equal when
    their levels are equal and can be dictionary keys.

    The flat form, `flat()` / `from_flat()`, is the 60 ints a search passes
    through its configs, ordered op by op, copy by copy, probability before
    magnitude: `flat[4 * i + 2 * j]` is the probability level and
    `flat[4 * i + 2 * j + 1]` the magnitude level of copy `j` of op `i`.
    (PBA's own `hp_policy` lists all first copies, then all second copies.)

    References:
        Ho et al. Population Based Augmentation, ICML 2019.

    Args:
        probabilities: `(15, 2)` whole numbers in `0..10`.
        magnitudes: `(15, 2)` whole numbers in `0..9`.

    Example:
    ```python
    policy = kd_keras.augment.pba.Policy.random(np.random.default_rng(0))
    child = policy.explore(np.random.default_rng(1))
    ```
    """

    __slots__ = ("_probabilities", "_magnitudes")

    def __init__(self, probabilities, magnitudes):
        self._probabilities = _levels(probabilities, PROBABILITY_LEVELS, "probability")
        self._magnitudes = _levels(magnitudes, MAGNITUDE_LEVELS, "magnitude")

    @property
    def probabilities(self):
        """Probability levels, a read-only `(15, 2)` int array."""
        return self._probabilities

    @property
    def magnitudes(self):
        """Magnitude levels, a read-only `(15, 2)` int array."""
        return self._magnitudes

    @classmethod
    def zeros(cls):
        """Return the policy that never augments (every probability 0), PBA's starting point."""
        return cls(np.zeros(_SHAPE, "int64"), np.zeros(_SHAPE, "int64"))

    @classmethod
    def random(cls, rng):
        """Return a policy with every level drawn uniformly from its grid.

        Args:
            rng: a `np.random.Generator` or a seed for one.

        Returns:
            A `Policy`.
        """
        rng = np.random.default_rng(rng)
        return cls(
            rng.integers(0, PROBABILITY_LEVELS, size=_SHAPE),
            rng.integers(0, MAGNITUDE_LEVELS, size=_SHAPE),
        )

    @classmethod
    def from_flat(cls, values):
        """Return the policy of a flat list of 60 levels (the order of `flat()`)."""
        values = list(values)
        if len(values) != _FLAT_SIZE:
            raise ValueError(
                f"A flat policy has {_FLAT_SIZE} levels (15 ops x 2 copies x "
                f"probability, magnitude), got {len(values)}."
            )
        pairs = np.asarray(values, dtype="float64").reshape(*_SHAPE, 2)
        return cls(pairs[..., 0], pairs[..., 1])

    def flat(self):
        """Return the 60 levels as Python ints: op by op, copy by copy, probability first."""
        pairs = np.stack([self._probabilities, self._magnitudes], axis=-1)
        return [int(value) for value in pairs.reshape(-1)]

    def explore(self, rng, resample_probability=RESAMPLE_PROBABILITY):
        """Return a perturbed copy: PBA's explore step of population-based training.

        Each of the 60 levels independently is, with probability
        `resample_probability`, redrawn uniformly from its grid; otherwise it
        moves by an amount drawn uniformly from `{0, 1, 2, 3}`, down or up
        with probability 1/2 each, and is clipped to its grid (PBA's
        `pba/search.py`).

        Args:
            rng: a `np.random.Generator` or a seed for one.
            resample_probability: probability of redrawing a level.

        Returns:
            A new `Policy`.
        """
        if not 0.0 <= resample_probability <= 1.0:
            raise ValueError(
                f"resample_probability must be in [0, 1], got {resample_probability}."
            )
        rng = np.random.default_rng(rng)
        levels = np.asarray(self.flat()).reshape(*_SHAPE, 2)
        top = np.array([PROBABILITY_LEVELS - 1, MAGNITUDE_LEVELS - 1])
        resample = rng.random(levels.shape) < resample_probability
        fresh = rng.integers(0, top + 1, size=levels.shape)
        amount = rng.integers(0, MAX_SHIFT + 1, size=levels.shape)
        down = rng.random(levels.shape) < 0.5
        shifted = np.where(down, np.maximum(levels - amount, 0), np.minimum(levels + amount, top))
        levels = np.where(resample, fresh, shifted)
        return Policy(levels[..., 0], levels[..., 1])

    def to_json(self):
        """Return the policy as a list of `{"op", "probability", "magnitude"}` levels, op by op."""
        return [
            {
                "op": name,
                "probability": int(self._probabilities[i, j]),
                "magnitude": int(self._magnitudes[i, j]),
            }
            for i, name in enumerate(PBA_OPS)
            for j in range(COPIES)
        ]

    @classmethod
    def from_json(cls, entries, where="policy"):
        """Return the policy of `to_json()`'s list; each op must appear exactly twice.

        Args:
            entries: a list of `{"op": name, "probability": level,
                "magnitude": level}`, in any order (an op's copies in the order
                they appear).
            where: how error messages name the list.

        Returns:
            A `Policy`.
        """
        if not isinstance(entries, list):
            raise ValueError(
                f"{where} must be a list of {{op, probability, magnitude}} entries, "
                f"got {type(entries).__name__}."
            )
        probabilities = np.zeros(_SHAPE, "int64")
        magnitudes = np.zeros(_SHAPE, "int64")
        seen = {name: 0 for name in PBA_OPS}
        for position, entry in enumerate(entries):
            here = f"{where}[{position}]"
            if not isinstance(entry, dict) or set(entry) != {"op", "probability", "magnitude"}:
                raise ValueError(
                    f"{here} must be an object with exactly the keys op, probability "
                    f"and magnitude, got {entry!r}."
                )
            name = entry["op"]
            if not isinstance(name, str) or name not in seen:
                raise ValueError(
                    f"{here}: unknown op {name!r}: PBA's ops are {', '.join(PBA_OPS)}."
                )
            if seen[name] == COPIES:
                raise ValueError(
                    f"{here}: op {name} appears more than {COPIES} times: "
                    f"list each op exactly {COPIES} times."
                )
            for key, levels, array in (
                ("probability", PROBABILITY_LEVELS, probabilities),
                ("magnitude", MAGNITUDE_LEVELS, magnitudes),
            ):
                value = entry[key]
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < levels:
                    raise ValueError(
                        f"{here} ({name}): {key} level {value!r} is not a whole "
                        f"number in 0..{levels - 1}: use levels 0..{levels - 1}."
                    )
                array[PBA_OPS.index(name), seen[name]] = value
            seen[name] += 1
        missing = [name for name, count in seen.items() if count != COPIES]
        if missing:
            raise ValueError(
                f"{where} must list each op exactly {COPIES} times; "
                f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not."
            )
        return cls(probabilities, magnitudes)

    def __eq__(self, other):
        if not isinstance(other, Policy):
            return NotImplemented
        return np.array_equal(self._probabilities, other._probabilities) and np.array_equal(
            self._magnitudes, other._magnitudes
        )

    def __hash__(self):
        return hash(tuple(self.flat()))

    def __repr__(self):
        active = [
            f"{name}[{j}] p={self._probabilities[i, j]} m={self._magnitudes[i, j]}"
            for i, name in enumerate(PBA_OPS)
            for j in range(COPIES)
            if self._probabilities[i, j] > 0
        ]
        return f"Policy({', '.join(active) or 'never augments'})"


# The `rolewise` recipe's hand-set default, not searched: mild geometric ops
# (digits and objects keep their class under them) at moderate probability,
# translations most often (they are what a shifted test asks for), weak
# colour ops, and none of the ops that destroy a digit on a black
# background (Invert, Solarize, Equalize, AutoContrast, Posterize). Second
# copies off. Levels: (probability 0..10, magnitude 0..9).
_HAND_SET = {
    "Rotate": (4, 4),
    "Color": (2, 4),
    "Contrast": (3, 4),
    "Brightness": (3, 4),
    "Sharpness": (3, 4),
    "ShearX": (4, 4),
    "ShearY": (4, 4),
    "TranslateX": (6, 5),
    "TranslateY": (6, 5),
    "Cutout": (3, 4),
}
HAND_SET_POLICY = Policy(
    [[_HAND_SET.get(name, (0, 0))[0], 0] for name in PBA_OPS],
    [[_HAND_SET.get(name, (0, 0))[1], 0] for name in PBA_OPS],
)


class Schedule:
    """A PBA schedule: the policy in force from each start epoch on, saved as versioned JSON.

    `entries` are `(start_epoch, Policy)` pairs with strictly increasing,
    0-based start epochs, the first 0; a policy is in force from its start
    epoch until the next one's. `epochs` is the length of the run the
    schedule was made for (a search's), or None; a run of another length
    stretches it as PBA does: epoch `e` of an `n`-epoch run uses the policy
    of epoch `e * epochs // n`.

    The JSON file (`save` / `load`):
    `{"format": "kd_keras.pba_schedule", "version": 1, "ops": [15 names],
    "epochs": N or null, "schedule": [{"start_epoch": e, "policy": [...]}]}`
    with each policy in `Policy.to_json()` form. Other top-level keys are
    ignored.

    References:
        Ho et al. Population Based Augmentation, ICML 2019.

    Args:
        entries: `(start_epoch, Policy)` pairs.
        epochs: the run length the schedule was made for, or None.

    Example:
    ```python
    schedule = kd_keras.augment.pba.Schedule([(0, policy_a), (10, policy_b)], epochs=30)
    schedule.save("student_schedule.json")
    ```
    """

    def __init__(self, entries, epochs=None):
        entries = list(entries)
        if not entries:
            raise ValueError("A schedule needs at least one entry: the policy of epoch 0.")
        checked = []
        for start, policy in entries:
            start = _whole(start, "A schedule's start epoch")
            if not isinstance(policy, Policy):
                raise ValueError(
                    f"Schedule entries pair a start epoch with a Policy, got "
                    f"{type(policy).__name__} at epoch {start}."
                )
            if checked and start <= checked[-1][0]:
                raise ValueError(
                    f"Schedule start epochs must increase strictly, got {start} after "
                    f"{checked[-1][0]}: sort the entries and keep one per epoch."
                )
            checked.append((start, policy))
        if checked[0][0] != 0:
            raise ValueError(
                f"A schedule's first entry must start at epoch 0, got {checked[0][0]}: "
                "add the policy of epoch 0."
            )
        if epochs is not None:
            epochs = _whole(epochs, "A schedule's epochs", minimum=1)
            if checked[-1][0] >= epochs:
                raise ValueError(
                    f"A schedule made for {epochs} epochs cannot start a policy at epoch "
                    f"{checked[-1][0]}: drop that entry or raise epochs."
                )
        self._entries = tuple(checked)
        self._starts = [start for start, _ in checked]
        self._epochs = epochs

    @property
    def entries(self):
        """The `(start_epoch, Policy)` pairs, sorted by start epoch."""
        return list(self._entries)

    @property
    def epochs(self):
        """The run length the schedule was made for, or None."""
        return self._epochs

    def policy_at(self, epoch, epochs=None):
        """Return the policy in force at 0-based `epoch` of a run of `epochs` epochs.

        Args:
            epoch: the 0-based epoch.
            epochs: the run's length; when it and the schedule's `epochs` are
                both known and differ, the schedule is stretched to the run.

        Returns:
            A `Policy`.
        """
        epoch = _whole(epoch, "epoch")
        if epochs is not None and self._epochs is not None and epochs != self._epochs:
            epoch = epoch * self._epochs // int(epochs)
        return self._entries[bisect.bisect_right(self._starts, epoch) - 1][1]

    @classmethod
    def constant(cls, policy, epochs=None):
        """Return the schedule that uses `policy` in every epoch."""
        return cls([(0, policy)], epochs=epochs)

    @classmethod
    def from_history(cls, history, epochs=None):
        """Return the schedule of a trial's policy changes, as population-based training records them.

        Args:
            history: `(epoch, policy)` pairs, `policy` a `Policy` or its flat
                list, in any order; the first must be at epoch 0 (the initial
                policy). Of several changes at one epoch the last listed
                wins; a change to the policy already in force is dropped.
            epochs: the run length the schedule was made for, or None.

        Returns:
            A `Schedule`.

        Example:
        ```python
        schedule = kd_keras.augment.pba.Schedule.from_history(
            [(0, initial.flat()), (3, explored.flat())], epochs=30)
        ```
        """
        latest = {}
        for epoch, policy in history:
            epoch = _whole(epoch, "A history's epoch")
            latest[epoch] = policy if isinstance(policy, Policy) else Policy.from_flat(policy)
        if 0 not in latest:
            raise ValueError(
                "A policy history must start at epoch 0 with the initial policy, got "
                f"epochs {sorted(latest) or 'none'}."
            )
        entries = []
        for epoch in sorted(latest):
            if not entries or entries[-1][1] != latest[epoch]:
                entries.append((epoch, latest[epoch]))
        return cls(entries, epochs=epochs)

    def to_json(self):
        """Return the schedule as the JSON-ready dictionary `save` writes."""
        return {
            "format": SCHEDULE_FORMAT,
            "version": SCHEDULE_VERSION,
            "ops": list(PBA_OPS),
            "epochs": self._epochs,
            "schedule": [
                {"start_epoch": start, "policy": policy.to_json()}
                for start, policy in self._entries
            ],
        }

    @classmethod
    def from_json(cls, content):
        """Return the schedule of a `to_json()` dictionary, validating every field."""
        if not isinstance(content, dict):
            raise ValueError(
                f"a schedule is a JSON object, got {type(content).__name__}: write it "
                "with kd_keras.augment.pba.Schedule.save."
            )
        if content.get("format") != SCHEDULE_FORMAT:
            raise ValueError(
                f"format is {content.get('format')!r}, not {SCHEDULE_FORMAT!r}: pass a "
                "schedule written by Schedule.save or kd-keras search."
            )
        if content.get("version") != SCHEDULE_VERSION:
            raise ValueError(
                f"schedule version {content.get('version')!r} is not the version "
                f"{SCHEDULE_VERSION} this kd_keras reads: rewrite it with this "
                "version's Schedule.save or upgrade kd_keras."
            )
        names = content.get("ops")
        if not isinstance(names, list):
            raise ValueError(f"ops must be the list of the 15 op names, got {names!r}.")
        unknown = [name for name in names if name not in PBA_OPS]
        if unknown:
            raise ValueError(
                f"unknown op {unknown[0]!r} in ops: PBA's ops are {', '.join(PBA_OPS)}."
            )
        missing = [name for name in PBA_OPS if name not in names]
        if missing:
            raise ValueError(
                f"ops lacks {', '.join(missing)}: list all 15 ops ({', '.join(PBA_OPS)})."
            )
        epochs = content.get("epochs")
        if epochs is not None and (
            isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1
        ):
            raise ValueError(f"epochs must be a whole number >= 1 or null, got {epochs!r}.")
        schedule = content.get("schedule")
        if not isinstance(schedule, list) or not schedule:
            raise ValueError(
                "schedule must be a non-empty list of {start_epoch, policy} entries, "
                f"got {schedule!r}."
            )
        entries = []
        for position, entry in enumerate(schedule):
            here = f"schedule[{position}]"
            if not isinstance(entry, dict) or set(entry) != {"start_epoch", "policy"}:
                raise ValueError(
                    f"{here} must be an object with exactly the keys start_epoch and "
                    "policy."
                )
            start = entry["start_epoch"]
            if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                raise ValueError(
                    f"{here}: start_epoch must be a whole number >= 0, got {start!r}."
                )
            entries.append((start, Policy.from_json(entry["policy"], f"{here}.policy")))
        return cls(entries, epochs=epochs)

    def save(self, path):
        """Write the schedule as JSON to `path` (to a temporary name first, then renamed)."""
        path = pathlib.Path(path)
        temporary = path.with_name(f"{path.name}.partial")
        temporary.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path):
        """Read a schedule JSON file; every problem is a one-line `ValueError` naming the file and the fix.

        Args:
            path: a file written by `Schedule.save` (or `kd-keras search`).

        Returns:
            A `Schedule`.

        Example:
        ```python
        schedule = kd_keras.augment.pba.Schedule.load("student_schedule.json")
        ```
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise ValueError(f"Schedule file {path} does not exist: check the path.")
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"Schedule file {path} is not valid JSON ({str(error).splitlines()[0]}): "
                "fix it or write it again with Schedule.save."
            ) from None
        try:
            return cls.from_json(content)
        except ValueError as error:
            raise ValueError(f"Schedule file {path}: {error}") from None

    def __eq__(self, other):
        if not isinstance(other, Schedule):
            return NotImplemented
        return self._entries == other._entries and self._epochs == other._epochs

    def __hash__(self):
        return hash((self._entries, self._epochs))

    def __repr__(self):
        starts = ", ".join(str(start) for start in self._starts)
        return f"Schedule(start epochs [{starts}], epochs={self._epochs})"


def as_schedule(value):
    """Return a `Schedule` from a schedule, a constant `Policy` or the path of a schedule file.

    Args:
        value: a `Schedule`, a `Policy` (used in every epoch) or a path.

    Returns:
        A `Schedule`.

    Example:
    ```python
    schedule = kd_keras.augment.pba.as_schedule("teacher_schedule.json")
    ```
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, Policy):
        return Schedule.constant(value)
    if isinstance(value, (str, os.PathLike)):
        return Schedule.load(value)
    raise ValueError(
        f"Expected a PBA Schedule, Policy or schedule file path, got "
        f"{type(value).__name__}."
    )


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


class PBAAugment:
    """Applies a PBA schedule to batches in tf.data: `Dataset.batch(64).map(PBAAugment(schedule))`.

    Per image, exactly as PBA's `apply_policy`: draw the number of ops
    `count` from `{0: 0.2, 1: 0.3, 2: 0.5}`; shuffle the 30 (op, probability,
    magnitude) entries of the current epoch's policy; walk them, applying
    each with its probability (magnitude `level / 10`, a random sign for
    signed ops) and counting it when applied; stop once `count` ops were
    applied. Images are floats in `[0, 1]`, batches `(batch, height, width,
    channels)` (1 or 3 channels); labels pass through.

    It maps whole batches (`batched = True`, which `kd_keras.data.pipeline`
    honours by mapping it after `batch`): the plans of all images are drawn
    at once (`plan`), then, for each of the two slots, each op runs once, on
    the images that chose it, with their own magnitudes (`apply`); ops no
    image chose do not run. (Cutout, whose op draws one square position per
    call, runs once per image that chose it.) Each batch runs in
    TensorFlow's function runtime (`tf.py_function`), several times faster
    than tf.data's own; the pipeline needs the Python process that built
    it, as any tf.data pipeline with a Python function does.

    The policy follows the epoch: the current epoch and policy live in
    variables that `callback()` sets at the start of each epoch (before the
    epoch's data iterator starts under Keras `fit`); `set_epoch` does the
    same by hand. A Keras callback is added for you by `kd_keras.train_teacher`
    and by the `rolewise` recipe.

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
        fill_value: value of pixels the geometric ops and Cutout bring in.
        cutout: side of the square PBA's pipeline cuts out of every image
            last (after `then`), as a fraction of the image side: 0.5 is
            PBA's 16 px of 32 (role-kd's CIFAR-100: 0.25); 0 for none.
        then: optional per-image `(image, label) -> pair` applied to each image
            after the policy, e.g. `kd_keras.data.standard_augmentation()`
            (PBA's CIFAR pipeline).

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
    def input_range(self):
        """PBA's ops (colour, Solarize, Posterize, ...) take images in `[0, 1]`."""
        return (0.0, 1.0)

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
        return Policy(
            self._probability_levels.numpy(), self._magnitude_levels.numpy()
        )

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
        probabilities = tf.cast(
            tf.gather(tf.reshape(self._probability_levels, [-1]), order), tf.float32
        ) / PARAMETER_MAX
        coins = _uniform(keys, _COINS, _ENTRIES) < probabilities
        applied = tf.cumsum(tf.cast(coins, tf.int32), axis=1)
        chosen = coins & (applied <= count)
        # Entry of slot s: the shuffled entry whose coin made the (s + 1)-th
        # applied op, or `_ENTRIES` (no op) if there is none.
        picked = tf.stack(
            [
                tf.reduce_min(
                    tf.where(chosen & (applied == slot + 1), order, _ENTRIES), axis=1
                )
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
                args[0][None], 1.0, max_size=self.cutout, fill_value=self.fill_value,
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
