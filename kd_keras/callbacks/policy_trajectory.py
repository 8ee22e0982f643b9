"""A learned policy's magnitudes and probabilities, epoch by epoch: policy.json and policy.png."""

import json
import os

import keras

from kd_keras import atomic
from kd_keras import plots


class PolicyTrajectory(keras.callbacks.Callback):
    """Records a learned policy's magnitudes and probabilities per epoch; writes JSON and a PNG.

    At the start of training and after every epoch it stores the
    Distiller's `augmenter.log_scalars()` (e.g. a
    `kd_keras.augment.LearnedPolicy`), and at the end of training writes
    `policy.json` (a list of `{"epoch": e, "magnitude/<op>": m, ...}`, epoch
    0 being the prior) and `policy.png` (one small panel per op, drawn by
    `kd_keras.plots.plot_policy_trajectory`) to `directory`. `policy.json` is also rewritten
    after every epoch, and a run resumed at epoch `e` (by
    `kd_keras.callbacks.backup.Backup`) continues from its records up to `e`.

    Args:
        directory: where to write `policy.json` and `policy.png`.

    Returns:
        A `keras.callbacks.Callback`; `history` holds the records.

    Example:
    ```python
    trajectory = kd_keras.callbacks.PolicyTrajectory("runs/tst")
    distiller.fit(train_ds, epochs=30, callbacks=[schedule, trajectory])
    ```
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = os.fspath(directory)
        self.history = []

    def _record(self, epoch):
        self.history.append({"epoch": int(epoch), **self.model.augmenter.log_scalars()})

    def on_train_begin(self, logs=None):
        augmenter = getattr(self.model, "augmenter", None)
        if not callable(getattr(augmenter, "log_scalars", None)):
            raise ValueError(
                "PolicyTrajectory records a Distiller's augmenter.log_scalars(): "
                "use it with an augmenter that has one, e.g. "
                "kd_keras.augment.LearnedPolicy."
            )
        if not self.history:
            self._record(0)

    def on_epoch_begin(self, epoch, logs=None):
        json_path = os.path.join(self.directory, "policy.json")
        if epoch > 0 and len(self.history) == 1 and os.path.exists(json_path):
            # Resumed: the run that stopped recorded the epochs before this one.
            with open(json_path) as handle:
                earlier = json.load(handle)
            self.history = [record for record in earlier if record["epoch"] <= epoch]

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)
        self._write_json()

    def on_train_end(self, logs=None):
        self.write()

    def write(self):
        """Write `policy.json` and `policy.png` now; return their paths."""
        json_path = self._write_json()
        png_path = os.path.join(self.directory, "policy.png")
        with atomic.replacing(png_path) as temporary:
            plots.plot_policy_trajectory(self.history, temporary)
        return json_path, png_path

    def _write_json(self):
        os.makedirs(self.directory, exist_ok=True)
        json_path = os.path.join(self.directory, "policy.json")
        atomic.write_text(json_path, json.dumps(self.history, indent=2))
        return json_path
