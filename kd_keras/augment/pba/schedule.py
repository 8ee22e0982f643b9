"""PBA schedules: the policy in force from each start epoch on, saved as versioned JSON."""

import bisect
import json
import os
import pathlib

from kd_keras.augment.pba.policy import PBA_OPS
from kd_keras.augment.pba.policy import Policy
from kd_keras.augment.pba.policy import _whole

SCHEDULE_FORMAT = "kd_keras.pba_schedule"
SCHEDULE_VERSION = 1


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
                    f"{here} must be an object with exactly the keys start_epoch and policy."
                )
            start = entry["start_epoch"]
            if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                raise ValueError(f"{here}: start_epoch must be a whole number >= 0, got {start!r}.")
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
        f"Expected a PBA Schedule, Policy or schedule file path, got {type(value).__name__}."
    )
