"""Grids of what an augmenter makes of real images, in TensorBoard and as views.png."""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kd_keras import atomic
from kd_keras import plots


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
        self,
        log_dir,
        images,
        labels=None,
        every=1,
        count=8,
        name="views",
        augment=None,
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
            rows,
            captions,
            title="T, S: the teacher's and the student's predicted class",
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
        return [f"T {t}  S {s}" if ok else None for t, s, ok in zip(teacher, student, finite)]

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
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "views"))

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
