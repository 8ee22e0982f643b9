"""Callbacks for distillation: phase schedules and TensorBoard snapshots of views."""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kd_keras import atomic
from kd_keras import plots
from kd_keras.distiller import AUGMENTER
from kd_keras.distiller import STUDENT


class PhaseSchedule(keras.callbacks.Callback):
    """Alternates a Distiller between its student and augmenter phases.

    A `kd_keras.Distiller` with a learnable augmenter trains either the
    student or the augmenter at each step, as its `phase` says; this callback
    sets `phase` on a schedule given in one of two modes:

    - **steps** (HARD-style): `student_steps` student steps, then
      `augmenter_steps` augmenter steps, repeating. The position in the cycle
      is a global step counted across epochs and `fit` calls; at the start of
      each `fit` it is derived from the optimisers' `iterations` (student's
      plus augmenter's), so a run restored from a `.keras` file or by
      `keras.callbacks.BackupAndRestore` continues the cycle where it was.
      With `steps_per_execution > 1`, flips land on execution boundaries.
    - **epochs** (TST-style): the augmenter trains during the epochs of
      `augmenter_epochs` and the student during all others. Epochs are
      Keras's 0-based indices: `augmenter_epochs=[30, 90]` with
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
        A `keras.callbacks.Callback` for `Distiller.fit`; it raises
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

    def __init__(
        self,
        student_steps=None,
        augmenter_steps=None,
        augmenter_epochs=None,
        augmenter_epoch_length=None,
        reset_augmenter_optimizer=False,
    ):
        super().__init__()
        step_mode = student_steps is not None or augmenter_steps is not None
        if step_mode == (augmenter_epochs is not None):
            raise ValueError(
                "Give exactly one schedule: student_steps=N and "
                "augmenter_steps=M (steps mode), or augmenter_epochs=... "
                "(epochs mode)."
            )
        self.reset_augmenter_optimizer = bool(reset_augmenter_optimizer)
        self.student_steps = None
        self.augmenter_steps = None
        self.augmenter_epochs = None
        if step_mode:
            if augmenter_epoch_length is not None:
                raise ValueError(
                    "augmenter_epoch_length belongs to epochs mode: drop it "
                    "or use augmenter_epochs=[...] instead of steps."
                )
            for name, value in (
                ("student_steps", student_steps),
                ("augmenter_steps", augmenter_steps),
            ):
                if value is None or int(value) != value or value < 1:
                    raise ValueError(
                        f"{name} must be an integer >= 1 in steps mode, got "
                        f"{value!r}: give both student_steps and augmenter_steps."
                    )
            self.student_steps = int(student_steps)
            self.augmenter_steps = int(augmenter_steps)
        else:
            self.augmenter_epochs = _augmenter_windows(
                augmenter_epochs, augmenter_epoch_length
            )
        self._step = 0
        self._synced = False
        self._begin_step = 0
        self._current = None

    @property
    def cycle(self):
        """Steps mode: `student_steps + augmenter_steps`; `None` in epochs mode."""
        if self.student_steps is None:
            return None
        return self.student_steps + self.augmenter_steps

    def phase_at_step(self, step):
        """Return the phase of the 0-based global `step` in steps mode.

        Args:
            step: the number of steps trained before this one.

        Returns:
            `"student"` or `"augmenter"`.
        """
        if self.student_steps is None:
            raise ValueError("phase_at_step is for steps mode; use phase_at_epoch.")
        return STUDENT if step % self.cycle < self.student_steps else AUGMENTER

    def phase_at_epoch(self, epoch):
        """Return the phase of the 0-based Keras `epoch` in epochs mode.

        Args:
            epoch: the epoch index `fit` passes to its callbacks.

        Returns:
            `"student"` or `"augmenter"`.
        """
        if self.augmenter_epochs is None:
            raise ValueError("phase_at_epoch is for epochs mode; use phase_at_step.")
        for start, length in self.augmenter_epochs.items():
            if start <= epoch < start + length:
                return AUGMENTER
        return STUDENT

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
        # The position is derived at the first epoch, not here: callbacks
        # listed after this one (BackupAndRestore) may still restore the
        # optimisers in their own on_train_begin.
        self._synced = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.augmenter_epochs is not None:
            phase = self.phase_at_epoch(epoch)
            if (self.params or {}).get("verbose") and phase != self._current:
                print(
                    "From this epoch on the augmenter trains (the student is frozen)."
                    if phase == AUGMENTER else
                    "From this epoch on the student trains (the augmenter is frozen)."
                )
            # A resumed run that re-enters a phase mid-way keeps the restored
            # optimiser state; only the phase's first epoch starts afresh.
            self._set_phase(phase, reset=epoch in self.augmenter_epochs)
        elif not self._synced:
            self._step = self._resumed_step()
            self._synced = True
            # No reset: a phase starting here was reset (and the reset saved)
            # when the previous run flipped into it.
            self._set_phase(self.phase_at_step(self._step), reset=False)

    def on_train_batch_begin(self, batch, logs=None):
        self._begin_step = batch

    def on_train_end(self, logs=None):
        # A Distiller handed back (or saved) after fit is a student to use:
        # a further fit, save or export must not start in the augmenter phase.
        self._set_phase(STUDENT, reset=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.student_steps is None:
            return
        self._step += max(batch - self._begin_step + 1, 1)
        phase = self.phase_at_step(self._step)
        if phase != self._current:
            self._set_phase(phase, reset=phase == AUGMENTER)

    def _set_phase(self, phase, reset):
        if phase == AUGMENTER and reset and self.reset_augmenter_optimizer:
            reset_optimizer(self.model.augmenter_optimizer, self.model.augmenter)
        self.model.phase = phase
        self._current = phase

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


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` whose evaluation curves follow every training step.

    Keras draws `evaluation_<metric>_vs_iterations` against the student
    optimiser's `iterations`, which stand still while a Distiller trains its
    augmenter: TST's policy epochs would stack their validation points on one
    step. This callback draws them against `Distiller.steps_trained` (steps of
    either phase) instead; everything else is Keras'.

    Args:
        *args: passed to `keras.callbacks.TensorBoard` (e.g. `log_dir`).
        **kwargs: passed to `keras.callbacks.TensorBoard`.

    Returns:
        A `keras.callbacks.Callback`.

    Example:
    ```python
    distiller.fit(train_ds, validation_data=test_ds,
                  callbacks=[kd_keras.callbacks.TensorBoard("logs")])
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._steps_writer = None

    def on_test_end(self, logs=None):
        steps = getattr(self.model, "steps_trained", None)
        if steps is None:
            super().on_test_end(logs)
            return
        super().on_test_end({})
        if self._steps_writer is None:
            self._steps_writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "validation")
            )
        with self._steps_writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.scalar(f"evaluation_{name}_vs_iterations", value, step=steps)
        self._steps_writer.flush()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._steps_writer is not None:
            self._steps_writer.close()
            self._steps_writer = None


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


class ViewSnapshots(keras.callbacks.Callback):
    """Writes a labelled grid of original vs augmented views to TensorBoard during training.

    Every `every` epochs (epochs 0, every, 2*every, ...) the Distiller's
    augmenter makes views of a fixed batch of `images`, exactly as a training
    step would (`augmenter.views(..., training=True)` with the Distiller's
    teacher and student), or, with `augment`, a host-side augmentation (e.g.
    a PBA policy applied in the input pipeline) makes them; the grid
    (`kd_keras.plots.image_grid`) is written as an image summary to
    `<log_dir>/views`: a row "original" over a row "view", each image
    upscaled with nearest-neighbour so its longer side is at least
    `min_size` pixels, and under each the teacher's and the student's
    predicted classes on it ("T 3  S 5"). When the views hold more samples
    than the batch (e.g. `[x, x~]`), the second row shows the samples after
    the first `B`; otherwise the views themselves. Pixel values are shown
    as they are when the originals lie in `[0, 1]`, divided by 255 when in
    `[0, 255]`, and otherwise min-max scaled by the originals' range; views
    use the same scaling (clipped), so colour changes stay visible.
    Single-channel images are shown in grey.

    Each epoch it also logs the augmenter's learned scalars when the
    augmenter has a `log_scalars()` method returning `{name: value}` (as
    `augmenter/<name>`; a vector value is logged per element as
    `augmenter/<name>/<i>`).

    Rendering calls the augmenter, so a random augmenter's seed state moves
    on: a run with snapshots does not draw the same random views as one
    without.

    Args:
        log_dir: TensorBoard log directory; events go to `<log_dir>/views`.
        images: a NumPy batch `(n, height, width[, channels])` with 1, 3 or
            4 (alpha dropped) channels; the first `count` are shown.
        labels: their labels (integer ids or per-class probabilities), for
            augmenters that use them; `None` uses the teacher's predictions.
        every: write an image every this many epochs.
        count: number of images shown (columns of the grid).
        name: tag of the image summary.
        augment: optional host-side batch augmentation
            `(images, labels) -> (images, labels)` shown instead of the
            Distiller's augmenter, e.g. a `kd_keras.augment.pba.PBAAugment`'s
            `augment_batch`.
        min_size: the longer side of each image in the grid, at least.

    Returns:
        A `keras.callbacks.Callback`; after training, `last_grid` holds the
        last grid as a float32 `(rows, cols, 3)` array in `[0, 1]` and
        `last_boxes` the `(top, left)` pixel of each image in it, per row.

    Example:
    ```python
    snapshots = kd_keras.callbacks.ViewSnapshots("runs/hard/logs", data.x_test[:8])
    distiller.fit(train_ds, epochs=10, callbacks=[snapshots])
    snapshots.save_png("runs/hard/views.png")
    ```
    """

    def __init__(
        self, log_dir, images, labels=None, every=1, count=8, name="views", augment=None,
        min_size=112,
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        if int(count) < 1:
            raise ValueError(f"count must be >= 1, got {count}.")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or not len(images):
            raise ValueError(
                "ViewSnapshots shows images: pass a non-empty batch of shape "
                "(n, height, width) or (n, height, width, channels) with 1, 3 "
                f"or 4 channels, got shape {images.shape}."
            )
        self.log_dir = os.fspath(log_dir)
        self.images = images[: int(count)].astype("float32")
        self.labels = None if labels is None else np.asarray(labels)[: int(count)]
        self.every = int(every)
        self.count = len(self.images)
        self.name = name
        self.augment = augment
        self.min_size = int(min_size)
        self.last_grid = None
        self.last_boxes = None
        self._writer = None

    def snapshot(self):
        """Render the grid of the current augmenter now, without writing it.

        Returns:
            A float32 `(rows, cols, 3)` array in `[0, 1]`, also kept as
            `last_grid` (and the images' positions as `last_boxes`).
        """
        if self.model is None:
            raise ValueError(
                "ViewSnapshots has no model yet: pass it to Distiller.fit, or "
                "call set_model(distiller) first."
            )
        original = self.images
        if self.augment is not None:
            labels = self.labels
            if labels is None:
                labels = ops.convert_to_numpy(
                    ops.argmax(self.model.teacher(original, training=False), axis=-1)
                )
            shown = [("view", self.augment(original, labels)[0])]
        else:
            views = self.model.make_views(original, self.labels)
            # The first view is the batch itself for augmenters that keep it;
            # every other view (one per stage of a Stack) gets a row.
            made = list(views)[1:] if self.model.augmenter.keeps_input else list(views)
            made = made or list(views)  # the identity: the view is the batch
            names = ["view"] if len(made) == 1 else [f"view {i + 1}" for i in range(len(made))]
            shown = [(name, view.x[: len(original)]) for name, view in zip(names, made)]
        shown = [
            (name, np.asarray(ops.convert_to_numpy(images), dtype="float32"))
            for name, images in shown
        ]
        for _, augmented in shown:
            if augmented.shape[1:] != original.shape[1:]:
                raise ValueError(
                    f"The augmenter's views have shape {augmented.shape[1:]} but "
                    f"the images {original.shape[1:]}: ViewSnapshots shows views "
                    "of the images' own shape."
                )
        low, high = _display_range(original)
        rows, captions = [], []
        for label, images in [("original", original), *shown]:
            rows.append((label, _to_rgb(np.clip((images - low) / (high - low), 0.0, 1.0))))
            captions.append(self._predictions(images))
        pixels, self.last_boxes = plots.image_grid(
            rows, captions, title="T, S: the teacher's and the student's predicted class",
            min_size=self.min_size,
        )
        self.last_grid = pixels.astype("float32") / 255.0
        return self.last_grid

    def _predictions(self, images):
        finite = np.isfinite(images).all(axis=(1, 2, 3))
        if not finite.any():
            return [None] * len(images)
        inputs = np.where(finite[:, None, None, None], images, 0.0).astype("float32")
        teacher = ops.convert_to_numpy(ops.argmax(self.model.teacher(inputs, training=False), -1))
        student = ops.convert_to_numpy(ops.argmax(self.model.student(inputs, training=False), -1))
        return [
            f"T {t}  S {s}" if ok else None for t, s, ok in zip(teacher, student, finite)
        ]

    def save_png(self, path):
        """Write the last grid (rendered now if there is none yet) as a PNG.

        Args:
            path: the file to write, e.g. `run_dir / "views.png"`.

        Returns:
            `path`.
        """
        grid = self.last_grid if self.last_grid is not None else self.snapshot()
        pixels = np.round(grid * 255.0).astype("uint8")
        with atomic.replacing(path) as temporary:
            keras.utils.save_img(temporary, pixels, file_format="png", scale=False)
        return path

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "views")
            )

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self.on_train_begin()
        with self._writer.as_default():
            log_scalars = getattr(self.model.augmenter, "log_scalars", None)
            if callable(log_scalars):
                for name, value in log_scalars().items():
                    value = np.asarray(ops.convert_to_numpy(value), dtype="float32")
                    if value.size == 1:
                        tf.summary.scalar(f"augmenter/{name}", value.item(), step=epoch)
                    else:
                        for index, element in enumerate(value.ravel()):
                            tf.summary.scalar(
                                f"augmenter/{name}/{index}", element.item(), step=epoch
                            )
            if epoch % self.every == 0:
                grid = self.snapshot()
                tf.summary.image(self.name, grid[None], step=epoch, max_outputs=1)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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


def _display_range(images):
    low, high = float(np.nanmin(images)), float(np.nanmax(images))
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    if low >= 0.0 and high <= 255.0:
        return 0.0, 255.0
    return low, high if high > low else low + 1.0


def _to_rgb(images):
    # NaN marks a missing view; show it black.
    images = np.nan_to_num(images, nan=0.0)
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3]

