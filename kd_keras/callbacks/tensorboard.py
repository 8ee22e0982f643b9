"""TensorBoard whose evaluation curves follow the steps of both phases."""

import os

import keras
import tensorflow as tf


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` whose evaluation curves follow every training step.

    Keras draws `evaluation_<metric>_vs_iterations` against the student
    optimiser's `iterations`, which stand still while a Distiller trains its
    augmenter: TST's policy epochs would stack their validation points on one
    step. This callback draws them against `Distiller.steps_trained` (steps of
    either phase) instead, and skips Keras' per-batch writes that
    `update_freq="epoch"` records nothing of; everything else is Keras'.

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

    def on_train_batch_end(self, batch, logs=None):
        # Keras writes every batch's logs under record_if(False) when
        # update_freq="epoch": nothing is recorded, yet each write costs
        # ~0.2 ms per scalar, a tenth of a small model's training step.
        super().on_train_batch_end(batch, None if self.update_freq == "epoch" else logs)

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
