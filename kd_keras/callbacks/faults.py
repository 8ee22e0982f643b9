"""Numerical faults: stop when a loss term turns NaN/Inf, report an augmenter that collapses."""

import math

import keras
import numpy as np
from absl import logging
from keras import ops


class NumericalFault(ArithmeticError):
    """Training produced NaN/Inf values or a collapsed augmenter; the message says where."""


# The total is NaN whenever a term is: named only when no term is.
_TOTALS = tuple(
    prefix + name for prefix in ("", "val_") for name in ("loss", "total_loss", "distillation_loss")
)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first step whose logged loss terms hold a NaN or Inf.

    Use it in every long run: a NaN in one step poisons the weights for the
    rest of training, yet `fit` would carry on for days. After each batch it
    reads the running means the model logs (for a `kd_keras.Distiller`:
    `loss`, `student_loss`, each distillation term, `augmenter_objective`);
    a running mean turns non-finite at the very step its term does. At the
    end of an epoch it also checks the validation terms. It raises
    `NumericalFault` naming the terms, their values and the step (the total
    `loss` only when no single term is named), before any
    epoch-end checkpoint: list it before `kd_keras.callbacks.backup.Backup` and the
    last good checkpoint stays as it was.

    Args:
        terms: names of the logs to watch; `None` watches every number logged.

    Returns:
        A `keras.callbacks.Callback`.

    Example:
    ```python
    distiller.fit(train_ds, epochs=30,
                  callbacks=[kd_keras.callbacks.faults.StopOnNonFinite(), backup])
    ```
    """

    def __init__(self, terms=None):
        super().__init__()
        self.terms = None if terms is None else tuple(terms)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        terms = self._non_finite(logs)
        if not terms:
            return
        steps = self.params.get("steps") if self.params else None
        where = f"epoch {self._epoch + 1}, batch {batch + 1}"
        if steps:
            where = f"step {self._epoch * steps + batch + 1} ({where})"
        raise NumericalFault(
            f"Non-finite loss {terms} at {where}: training stopped "
            "before the next checkpoint; lower the learning rate or check the "
            "data for NaN/Inf."
        )

    def on_epoch_end(self, epoch, logs=None):
        terms = self._non_finite(logs)
        if terms:
            raise NumericalFault(
                f"Non-finite {terms} at the end of epoch {epoch + 1}: "
                "training stopped before its checkpoint; check the validation "
                "data for NaN/Inf."
            )

    def _non_finite(self, logs):
        found = {
            name: value
            for name, value in (logs or {}).items()
            if (self.terms is None or name in self.terms) and _non_finite(value)
        }
        terms = {name: value for name, value in found.items() if name not in _TOTALS}
        return ", ".join(f"{name}={value}" for name, value in sorted((terms or found).items()))


class CollapseMonitor(keras.callbacks.Callback):
    """Reports an augmenter whose views of a fixed batch stop varying or hold NaN/Inf.

    A learned augmenter can collapse: every input mapped to the same view
    (a constant image), after which the student learns nothing useful. Every
    `every` epochs this callback makes views of a fixed batch exactly as a
    training step would and compares their spread (standard deviation over
    the batch, averaged over features) with the inputs' spread. A ratio below
    `tolerance` is a collapse: it is logged as a warning and recorded in
    `collapsed_epochs`, and with `stop=True` raises `NumericalFault`. Views
    holding NaN/Inf always raise `NumericalFault`. When the views hold more
    samples than the batch (e.g. `[x, x~]`), the samples after the first `B`
    are the ones judged. Like `kd_keras.callbacks.ViewSnapshots`, it draws
    from the augmenter's random state.

    Args:
        inputs: a fixed batch of real inputs (NumPy), e.g. 32 test images.
        labels: their labels, or `None` for the teacher's predictions.
        every: check every this many epochs (epochs 0, every, ...).
        tolerance: smallest ratio of view spread to input spread that is
            not a collapse.
        stop: raise `NumericalFault` on a collapse instead of warning.

    Returns:
        A `keras.callbacks.Callback`; `collapsed_epochs` lists the 0-based
        epochs whose views had collapsed.

    Example:
    ```python
    monitor = kd_keras.callbacks.faults.CollapseMonitor(data.test[0][:32])
    distiller.fit(train_ds, epochs=30, callbacks=[schedule, monitor])
    ```
    """

    def __init__(self, inputs, labels=None, every=1, tolerance=1e-3, stop=False):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}.")
        if not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance!r}.")
        inputs = np.asarray(inputs)
        if inputs.ndim < 1 or len(inputs) < 2:
            raise ValueError(
                "CollapseMonitor compares views across a batch: pass at least 2 "
                f"inputs, got shape {inputs.shape}."
            )
        self.inputs = inputs
        self.labels = None if labels is None else np.asarray(labels)
        self.every = int(every)
        self.tolerance = float(tolerance)
        self.stop = bool(stop)
        self.collapsed_epochs = []

    def spread_ratio(self):
        """Make views of the fixed batch now; return their spread over the inputs'.

        Returns:
            The ratio (0 for constant views), or `None` when the inputs
            themselves do not vary.

        Raises:
            NumericalFault: the views hold NaN or Inf.
        """
        views = self.model.make_views(self.inputs, self.labels)
        made = np.asarray(ops.convert_to_numpy(views.x), dtype="float64")
        batch = len(self.inputs)
        if len(made) > batch:
            made = made[batch : 2 * batch]
        if not np.all(np.isfinite(made)):
            raise NumericalFault(
                f"The augmenter's views hold {np.sum(~np.isfinite(made))} NaN/Inf "
                "values: its weights diverged; lower the augmenter's learning rate."
            )
        reference = _spread(np.asarray(self.inputs, dtype="float64"))
        if reference == 0:
            return None
        return _spread(made) / reference

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        ratio = self.spread_ratio()
        if ratio is None or ratio >= self.tolerance:
            return
        self.collapsed_epochs.append(int(epoch))
        message = (
            f"The augmenter collapsed at epoch {epoch + 1}: its views vary "
            f"{ratio:.2g} times as much as its inputs (almost constant views); "
            "lower the augmenter's learning rate or strengthen its "
            "consistency term."
        )
        if self.stop:
            raise NumericalFault(message)
        logging.warning(message)


def _spread(values):
    if len(values) < 2:
        return 0.0
    return float(np.mean(np.std(values.reshape(len(values), -1), axis=0)))


def _non_finite(value):
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
