"""`kd_keras.train_teacher`: train a teacher with cross-entropy before distilling."""

import keras

from kd_keras import data as kd_data


def train_teacher(
    model,
    train_data,
    epochs=30,
    batch_size=64,
    learning_rate=1e-3,
    validation_data=None,
    augment=None,
    seed=0,
    callbacks=None,
    verbose="auto",
):
    """Train a logits model with cross-entropy (Adam), as the teacher of later runs.

    Args:
        model: a `keras.Model` that outputs logits.
        train_data: `(x, y)` arrays or an unbatched `tf.data.Dataset`.
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: Adam's learning rate (cosine-decayed to zero).
        validation_data: optional `(x, y)` or data set.
        augment: optional host-side `(image, label) -> pair` augmentation.
        seed: seeds everything random.
        callbacks: extra Keras callbacks.
        verbose: Keras `fit` verbosity.

    Returns:
        The trained `model`, compiled with accuracy.

    Example:
    ```python
    data = kd_keras.data.load_digits()
    teacher = kd_keras.train_teacher(kd_keras.models.get("cnn"), data.train)
    ```
    """
    keras.utils.set_random_seed(seed)
    if not isinstance(train_data, tuple):
        train = kd_data.pipeline(train_data, batch_size, True, augment, seed)
    else:
        x, y = kd_data.check_arrays(*train_data, num_classes=model.output_shape[-1])
        train = kd_data.pipeline((x, y), batch_size, True, augment, seed)
    steps = int(train.cardinality()) * epochs
    # A pipeline of unknown length has no schedule to decay over: keep the
    # rate constant rather than decaying it to zero after one step.
    rate = (
        keras.optimizers.schedules.CosineDecay(learning_rate, steps)
        if steps > 0
        else learning_rate
    )
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    validation = None
    if validation_data is not None:
        validation = kd_data.pipeline(validation_data, batch_size, training=False)
    model.fit(
        train,
        epochs=epochs,
        validation_data=validation,
        callbacks=callbacks or [],
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    return model
