"""Resumable training: epoch checkpoints that a kill at any moment cannot corrupt."""

import json
import pathlib
import time

import keras
import numpy as np

from kd_keras import _keras_compat
from kd_keras import atomic

CHECKPOINT = "checkpoint.json"


class Backup(keras.callbacks.Callback):
    """Checkpoints training at every epoch end and resumes from it when `fit` restarts.

    Use it for any run that may be interrupted: when the process dies (Ctrl-C,
    SIGTERM, SIGKILL, a preempted machine) the same `fit` call, given a
    `Backup` on the same directory, restores the last checkpoint and trains
    only the remaining epochs. A checkpoint holds every variable the model
    saves (for a `kd_keras.Distiller`: student, augmenter, both optimisers,
    the phase, hence also a `PhaseSchedule`'s position) plus the states of
    every `keras.random.SeedGenerator` (augmenters, dropout), which Keras'
    weight files leave out; a resumed run therefore draws the same views.

    It does what `keras.callbacks.BackupAndRestore` does, but safely: that
    callback rewrites `latest.weights.h5` in place and the epoch in a second
    file, so a kill during a save leaves a truncated checkpoint or weights of
    one epoch labelled with another. Here each checkpoint is written under a
    temporary name, renamed into place, and only then does `checkpoint.json`
    (also renamed into place) point at it. Checkpoints are made at epoch ends
    only: Keras resumes at the start of an epoch, so a mid-epoch checkpoint
    would replay that epoch's first batches on already-trained weights.

    A save costs ~0.1 s even for a small model (Keras walks every object it
    saves): with `min_interval_seconds`, epoch ends closer than that to the
    last save are skipped, except the first and the last epoch of `fit`, so
    epochs of a fraction of a second do not spend most of their time saving
    and an interruption loses at most that many seconds of training.

    List it after every callback whose `on_epoch_end` changes the model
    (`kd_keras.callbacks.ViewSnapshots` draws from the augmenter's seed), so
    the checkpoint holds the state the next epoch starts from.

    Args:
        backup_dir: directory of the checkpoint; used by this run alone.
        signature: optional JSON-able description of the run (recipe, seed,
            ...); restoring a checkpoint made with another signature raises
            `ValueError`, so a changed command never resumes a different run.
        delete_checkpoint: delete `backup_dir` when `fit` finishes normally.
        min_interval_seconds: skip the checkpoint of an epoch that ends
            sooner than this after the last one (0: every epoch, as
            `keras.callbacks.BackupAndRestore`).

    Returns:
        A `keras.callbacks.Callback`.

    Example:
    ```python
    backup = kd_keras.callbacks.backup.Backup("runs/hard/backup")
    distiller.fit(train_ds, epochs=30, callbacks=[schedule, backup])
    ```
    """

    def __init__(
        self, backup_dir, signature=None, delete_checkpoint=True, min_interval_seconds=0.0
    ):
        super().__init__()
        if not backup_dir:
            raise ValueError("Backup needs a backup_dir: pass the directory to keep it in.")
        if min_interval_seconds < 0:
            raise ValueError(
                f"min_interval_seconds must be >= 0 (0 saves every epoch), got {min_interval_seconds}."
            )
        self.backup_dir = pathlib.Path(backup_dir)
        self.signature = signature
        self.delete_checkpoint = bool(delete_checkpoint)
        self.min_interval_seconds = float(min_interval_seconds)
        self.restored_epoch = 0
        self._last_save = None

    def on_train_begin(self, logs=None):
        self.restored_epoch = self.restore()
        self._last_save = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.params is not None and epoch + 1 == self.params.get("epochs")
        if (
            last
            or self._last_save is None
            or time.monotonic() - self._last_save >= self.min_interval_seconds
        ):
            self.save(epoch + 1)
            self._last_save = time.monotonic()

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            atomic.remove(self.backup_dir)

    def save(self, epochs_done):
        """Write a checkpoint of the model after `epochs_done` finished epochs.

        Args:
            epochs_done: the number of epochs the checkpoint has trained.

        Returns:
            The path of `checkpoint.json`.
        """
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        stem = f"epoch-{int(epochs_done):06d}"
        weights = f"{stem}.weights.h5"
        seeds = f"{stem}.seeds.npz"
        with atomic.replacing(self.backup_dir / weights) as temporary:
            self.model.save_weights(temporary)
        with atomic.replacing(self.backup_dir / seeds) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, *[_value(v) for v in _seed_states(self.model)])
        content = {
            "epoch": int(epochs_done),
            "weights": weights,
            "seeds": seeds,
            "signature": self.signature,
            # What the weights file must fit: Keras' load_weights does not
            # always notice another model with as many layers.
            "shapes": _shapes(self.model),
        }
        path = self.backup_dir / CHECKPOINT
        atomic.write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")
        for old in self.backup_dir.glob("epoch-*"):
            if not old.name.startswith(stem):
                atomic.remove(old)
        return path

    def restore(self):
        """Load the checkpoint into the model, if there is one; return its epoch (else 0).

        Returns:
            The number of epochs the restored checkpoint had trained.
        """
        checkpoint = read_checkpoint(self.backup_dir)
        if checkpoint is None:
            return 0
        if self.signature is not None and checkpoint["signature"] != self.signature:
            raise ValueError(
                f"{self.backup_dir} holds a checkpoint of another run "
                f"({_difference(checkpoint['signature'], self.signature)}): rerun "
                "the original command, or delete the directory to start over."
            )
        model = self.model
        if not model.built:
            raise ValueError(
                "Backup restores into a built model: build it (call it on a batch) before fit."
            )
        if "shapes" in checkpoint and checkpoint["shapes"] != _shapes(model):
            raise ValueError(
                f"The checkpoint in {self.backup_dir} cannot be restored: its weights "
                "have other shapes than the model's, so it belongs to another model; "
                "delete the directory to start over."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(self.backup_dir / checkpoint["weights"])
            with np.load(self.backup_dir / checkpoint["seeds"]) as archive:
                values = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"The checkpoint in {self.backup_dir} cannot be restored "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): "
                "it belongs to another model or is damaged; delete the directory "
                "to start over."
            ) from error
        states = _seed_states(model)
        if len(values) != len(states):
            raise ValueError(
                f"The checkpoint in {self.backup_dir} holds {len(values)} random "
                f"seed states but the model has {len(states)}: it belongs to "
                "another model; delete the directory to start over."
            )
        for variable, value in zip(states, values):
            variable.assign(value)
        # How keras.callbacks.BackupAndRestore makes fit() skip finished epochs.
        _keras_compat.set_initial_epoch(model, checkpoint["epoch"])
        return checkpoint["epoch"]


def read_checkpoint(backup_dir):
    """Return the description of the checkpoint in `backup_dir`, or None if there is none.

    Args:
        backup_dir: a `Backup` directory.

    Returns:
        A dict with `epoch` (epochs trained), `weights`, `seeds` (file names)
        and `signature`, or `None`.

    Example:
    ```python
    checkpoint = kd_keras.callbacks.backup.read_checkpoint("runs/hard/backup")
    ```
    """
    path = pathlib.Path(backup_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = json.loads(path.read_text())
    except ValueError:
        checkpoint = None
    valid = (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("epoch"), int)
        and isinstance(checkpoint.get("weights"), str)
        and isinstance(checkpoint.get("seeds"), str)
    )
    if not valid:
        raise ValueError(
            f"{path} is not a kd_keras checkpoint: delete {path.parent} to start over."
        )
    checkpoint.setdefault("signature", None)
    return checkpoint


def _shapes(model):
    return [list(weight.shape) for weight in model.weights]


def _seed_states(model):
    # Layer.variables adds SeedGenerator states to Layer.weights; only the
    # weights go into a .weights.h5 file.
    weights = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def _value(variable):
    return keras.ops.convert_to_numpy(variable.value)


def _difference(stored, given):
    if not isinstance(stored, dict) or not isinstance(given, dict):
        return f"{stored!r} vs {given!r}"
    keys = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
    return ", ".join(f"{k} {stored.get(k)!r} then, {given.get(k)!r} now" for k in keys)
