"""Phases of a Distiller with a learnable augmenter: when the student trains, when the augmenter does."""

import keras
from keras import ops

from kd_keras.distiller import AUGMENTER
from kd_keras.distiller import STUDENT


class PhaseSchedule(keras.callbacks.Callback):
    """Alternates a Distiller between its student and augmenter phases.

    A `kd_keras.Distiller` with a learnable augmenter trains either the
    student or the augmenter at each step, as its `phase` says; this callback
    sets `phase` on a schedule given in one of two modes, each its own class
    (`PhaseSchedule(...)` returns the one its arguments name):

    - **steps** (HARD-style, `StepPhases`): `student_steps` student steps,
      then `augmenter_steps` augmenter steps, repeating. The position in the
      cycle is a global step counted across epochs and `fit` calls; at the
      start of each `fit` it is derived from the optimisers' `iterations`
      (student's plus augmenter's), so a run restored from a `.keras` file or
      by `keras.callbacks.BackupAndRestore` continues the cycle where it was.
      With `steps_per_execution > 1`, flips land on execution boundaries.
    - **epochs** (TST-style, `EpochPhases`): the augmenter trains during the
      epochs of `augmenter_epochs` and the student during all others. Epochs
      are Keras's 0-based indices: `augmenter_epochs=[30, 90]` with
      `augmenter_epoch_length=5` trains the augmenter in epochs 30-34 and
      90-94, i.e. the 31st to 35th and 91st to 95th epochs.

    With `reset_augmenter_optimizer=True` the augmenter's optimiser restarts
    from a fresh state (iterations, moments, accumulators; the learning rate
    is kept) at the start of every augmenter phase, as TST's official code
    does by re-creating it. The same variables are reused, so the compiled
    steps stay valid. In steps mode with a batch-level
    `BackupAndRestore(save_freq=<int>)`, list `PhaseSchedule` first so the
    backup sees the reset; the default `save_freq="epoch"` needs no care.
    Under mixed precision, steps skipped by loss scaling do not advance the
    optimisers' `iterations`, so a resumed cycle may lag by that many steps.

    Args:
        student_steps: steps mode: student steps per cycle (>= 1).
        augmenter_steps: steps mode: augmenter steps per cycle (>= 1).
        augmenter_epochs: epochs mode: either `{start_epoch: length}` or a
            list of start epochs (then give `augmenter_epoch_length`).
        augmenter_epoch_length: epochs mode with a list of starts: how many
            epochs each augmenter phase lasts.
        reset_augmenter_optimizer: reset the augmenter's optimiser at the
            start of each augmenter phase.

    Returns:
        A `StepPhases` or an `EpochPhases` (both `PhaseSchedule`s), a
        `keras.callbacks.Callback` for `Distiller.fit`; it raises
        `ValueError` at the start of training when the Distiller has no
        learnable augmenter.

    Example:
    ```python
    schedule = kd_keras.callbacks.PhaseSchedule(student_steps=4, augmenter_steps=1)
    distiller.fit(train_ds, epochs=20, callbacks=[schedule])
    tst = kd_keras.callbacks.PhaseSchedule(
        augmenter_epochs=[30, 90], augmenter_epoch_length=5,
        reset_augmenter_optimizer=True)
    ```
    """

    # Read by Distiller.fit, which warns when a learnable augmenter trains
    # without a schedule.
    sets_distiller_phase = True

    def __new__(cls, *args, **kwargs):
        if cls is PhaseSchedule:
            cls = _mode(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, reset_augmenter_optimizer=False):
        super().__init__()
        self.reset_augmenter_optimizer = bool(reset_augmenter_optimizer)
        self._current = None

    def set_model(self, model):
        _check_learnable(model)
        super().set_model(model)

    def on_train_begin(self, logs=None):
        _check_learnable(self.model)
        if self.reset_augmenter_optimizer and self.model.augmenter_optimizer is None:
            raise ValueError(
                "reset_augmenter_optimizer=True but the Distiller has no "
                "augmenter_optimizer: compile it first."
            )

    def on_train_end(self, logs=None):
        # A Distiller handed back (or saved) after fit is a student to use:
        # a further fit, save or export must not start in the augmenter phase.
        self._set_phase(STUDENT, reset=False)

    def _set_phase(self, phase, reset):
        if phase == AUGMENTER and reset and self.reset_augmenter_optimizer:
            reset_optimizer(self.model.augmenter_optimizer, self.model.augmenter)
        self.model.phase = phase
        self._current = phase


class StepPhases(PhaseSchedule):
    """`PhaseSchedule` in steps mode: `student_steps`, then `augmenter_steps`, repeating.

    Args:
        student_steps: student steps per cycle (>= 1).
        augmenter_steps: augmenter steps per cycle (>= 1).
        reset_augmenter_optimizer: reset the augmenter's optimiser at the
            start of each augmenter phase.

    Returns:
        A `keras.callbacks.Callback` (see `PhaseSchedule`).

    Example:
    ```python
    schedule = kd_keras.callbacks.StepPhases(student_steps=4, augmenter_steps=1)
    ```
    """

    def __init__(
        self,
        student_steps=None,
        augmenter_steps=None,
        reset_augmenter_optimizer=False,
        **epochs_mode,
    ):
        # `PhaseSchedule(...)` passes the other mode's arguments on, as None.
        _check_unset(epochs_mode, EPOCHS_MODE)
        super().__init__(reset_augmenter_optimizer)
        for name, value in (("student_steps", student_steps), ("augmenter_steps", augmenter_steps)):
            if value is None or int(value) != value or value < 1:
                raise ValueError(
                    f"{name} must be an integer >= 1 in steps mode, got "
                    f"{value!r}: give both student_steps and augmenter_steps."
                )
        self.student_steps = int(student_steps)
        self.augmenter_steps = int(augmenter_steps)
        self._step = 0
        self._synced = False
        self._begin_step = 0

    @property
    def cycle(self):
        """`student_steps + augmenter_steps`."""
        return self.student_steps + self.augmenter_steps

    def phase_at_step(self, step):
        """Return the phase of the 0-based global `step`.

        Args:
            step: the number of steps trained before this one.

        Returns:
            `"student"` or `"augmenter"`.
        """
        return STUDENT if step % self.cycle < self.student_steps else AUGMENTER

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # The position is derived at the first epoch, not here: callbacks
        # listed after this one (BackupAndRestore) may still restore the
        # optimisers in their own on_train_begin.
        self._synced = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._synced:
            self._step = self._resumed_step()
            self._synced = True
            # No reset: a phase starting here was reset (and the reset saved)
            # when the previous run flipped into it.
            self._set_phase(self.phase_at_step(self._step), reset=False)

    def on_train_batch_begin(self, batch, logs=None):
        self._begin_step = batch

    def on_train_batch_end(self, batch, logs=None):
        self._step += max(batch - self._begin_step + 1, 1)
        phase = self.phase_at_step(self._step)
        if phase != self._current:
            self._set_phase(phase, reset=phase == AUGMENTER)

    def _resumed_step(self):
        student = _count(self.model.optimizer.iterations)
        augmenter = _count(self.model.augmenter_optimizer.iterations)
        if not self.reset_augmenter_optimizer:
            return student + augmenter
        # With resets the augmenter's iterations count the current phase only;
        # the student's count full cycles, and after a finished student phase
        # the augmenter's count says how far its phase got (== M: done).
        cycles, into = divmod(student, self.student_steps)
        if into or student == 0 or augmenter >= self.augmenter_steps:
            return cycles * self.cycle + into
        return (cycles - 1) * self.cycle + self.student_steps + augmenter


class EpochPhases(PhaseSchedule):
    """`PhaseSchedule` in epochs mode: the augmenter trains in the listed epochs.

    Args:
        augmenter_epochs: either `{start_epoch: length}` or a list of start
            epochs (then give `augmenter_epoch_length`); 0-based.
        augmenter_epoch_length: with a list of starts, how many epochs each
            augmenter phase lasts.
        reset_augmenter_optimizer: reset the augmenter's optimiser at the
            start of each augmenter phase.

    Returns:
        A `keras.callbacks.Callback` (see `PhaseSchedule`).

    Example:
    ```python
    schedule = kd_keras.callbacks.EpochPhases({30: 5, 90: 5}, reset_augmenter_optimizer=True)
    ```
    """

    def __init__(
        self,
        augmenter_epochs=None,
        augmenter_epoch_length=None,
        reset_augmenter_optimizer=False,
        **steps_mode,
    ):
        # `PhaseSchedule(...)` passes the other mode's arguments on, as None.
        _check_unset(steps_mode, STEPS_MODE)
        super().__init__(reset_augmenter_optimizer)
        if augmenter_epochs is None:
            raise ValueError("augmenter_epochs is None: give {start: length} or a list of starts.")
        self.augmenter_epochs = _augmenter_windows(augmenter_epochs, augmenter_epoch_length)

    def phase_at_epoch(self, epoch):
        """Return the phase of the 0-based Keras `epoch`.

        Args:
            epoch: the epoch index `fit` passes to its callbacks.

        Returns:
            `"student"` or `"augmenter"`.
        """
        for start, length in self.augmenter_epochs.items():
            if start <= epoch < start + length:
                return AUGMENTER
        return STUDENT

    def on_epoch_begin(self, epoch, logs=None):
        phase = self.phase_at_epoch(epoch)
        if (self.params or {}).get("verbose") and phase != self._current:
            print(
                "From this epoch on the augmenter trains (the student is frozen)."
                if phase == AUGMENTER
                else "From this epoch on the student trains (the augmenter is frozen)."
            )
        # A resumed run that re-enters a phase mid-way keeps the restored
        # optimiser state; only the phase's first epoch starts afresh.
        self._set_phase(phase, reset=epoch in self.augmenter_epochs)


STEPS_MODE = ("student_steps", "augmenter_steps")
EPOCHS_MODE = ("augmenter_epochs", "augmenter_epoch_length")


def _mode(
    student_steps=None,
    augmenter_steps=None,
    augmenter_epochs=None,
    augmenter_epoch_length=None,
    reset_augmenter_optimizer=False,
):
    step_mode = student_steps is not None or augmenter_steps is not None
    if step_mode == (augmenter_epochs is not None):
        raise ValueError(
            "Give exactly one schedule: student_steps=N and "
            "augmenter_steps=M (steps mode), or augmenter_epochs=... "
            "(epochs mode)."
        )
    if step_mode and augmenter_epoch_length is not None:
        raise ValueError(
            "augmenter_epoch_length belongs to epochs mode: drop it "
            "or use augmenter_epochs=[...] instead of steps."
        )
    return StepPhases if step_mode else EpochPhases


def _check_unset(other_mode, names):
    unknown = sorted(set(other_mode) - set(names))
    if unknown:
        raise TypeError(f"Unexpected arguments {unknown}.")
    given = sorted(name for name, value in other_mode.items() if value is not None)
    if given:
        raise ValueError(f"{given} belong to the other mode of PhaseSchedule: drop them.")


def reset_optimizer(optimizer, augmenter):
    """Return `optimizer`'s variables to a freshly built optimiser's values, in place.

    Iterations, moments and accumulators restart as if the optimiser had been
    re-created from its config (so Adagrad's accumulators go back to their
    initial value, not to zero); the learning rate keeps its current value.
    The variable objects are kept, so compiled train steps remain valid.

    Args:
        optimizer: a built `keras.optimizers.Optimizer` (or loss-scale
            wrapper), e.g. `distiller.augmenter_optimizer`.
        augmenter: the layer whose trainable variables it was built for.

    Returns:
        `optimizer`, reset.

    Example:
    ```python
    kd_keras.callbacks.reset_optimizer(
        distiller.augmenter_optimizer, distiller.augmenter
    )
    ```
    """
    fresh = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    fresh.build(augmenter.trainable_variables)
    if len(fresh.variables) != len(optimizer.variables):
        raise ValueError(
            f"Cannot reset {type(optimizer).__name__}: a fresh copy has "
            f"{len(fresh.variables)} variables and it has "
            f"{len(optimizer.variables)}; build it on "
            "augmenter.trainable_variables."
        )
    for variable, initial in zip(optimizer.variables, fresh.variables):
        variable.assign(initial.value)
    return optimizer


def _check_learnable(model):
    if model is not None and not getattr(model, "learnable_augmenter", False):
        raise ValueError(
            "PhaseSchedule needs a kd_keras.Distiller whose augmenter has "
            "trainable weights (learnable_augmenter is False): pass a learnable "
            "augmenter, e.g. augmenter=kd_keras.augment.SpatialAugmenter("
            "sampler='gaussian'), or "
            "drop PhaseSchedule."
        )


def _count(variable):
    return int(ops.convert_to_numpy(variable.value))


def _augmenter_windows(augmenter_epochs, length):
    if isinstance(augmenter_epochs, dict):
        if length is not None:
            raise ValueError(
                "augmenter_epochs is a {start: length} dict, so "
                "augmenter_epoch_length is not used: drop it."
            )
        windows = dict(augmenter_epochs)
    else:
        if length is None:
            raise ValueError(
                "augmenter_epochs is a list of start epochs: give "
                "augmenter_epoch_length too, or pass {start: length}."
            )
        windows = {start: length for start in augmenter_epochs}
    if not windows:
        raise ValueError("augmenter_epochs is empty: give at least one start epoch.")
    for start, span in windows.items():
        if int(start) != start or start < 0 or int(span) != span or span < 1:
            raise ValueError(
                "augmenter_epochs needs 0-based integer start epochs >= 0 and "
                f"integer lengths >= 1, got start {start!r}, length {span!r}."
            )
    windows = {int(start): int(span) for start, span in sorted(windows.items())}
    starts = list(windows)
    for previous, start in zip(starts, starts[1:]):
        if previous + windows[previous] > start:
            raise ValueError(
                f"The augmenter phases starting at epochs {previous} and {start} "
                "overlap: shorten the first or move the second."
            )
    return windows
