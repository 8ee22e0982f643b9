"""PBA policies: 15 ops, two copies each, with a probability and a magnitude level.

`Policy` is the immutable value a search passes around (60 ints, `flat()`)
and people read (`to_json()`); `PBA_OPS` and the level grids are PBA's
(Ho et al. 2019). `HAND_SET_POLICY` is the `rolewise` recipe's default.
See `kd_keras.augment.pba` for how PBA's op ranges map onto
`kd_keras.augment.ops`.
"""

import numpy as np

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
# Ranges passed to the ops where PBA's differ from the ops' defaults and the
# op can take PBA's (see the `kd_keras.augment.pba` docstring).
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
        raise ValueError(f"{what} levels must have shape {_SHAPE} (op, copy), got {array.shape}.")
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
            raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability}.")
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
