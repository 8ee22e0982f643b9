"""`kd_keras.distill`: build a Distiller from a named recipe and fit it, in one call."""

import keras
import numpy as np
import tensorflow as tf

from kd_keras import data as kd_data
from kd_keras import recipes


def distill(
    teacher,
    student,
    train_data,
    recipe="kd",
    epochs=None,
    batch_size=None,
    validation_data=None,
    seed=0,
    callbacks=None,
    verbose="auto",
    **overrides,
):
    """Distil `teacher` into `student` with a named recipe and return the trained Distiller.

    Args:
        teacher: a trained `keras.Model` that outputs logits.
        student: the `keras.Model` to train; it outputs logits.
        train_data: `(x, y)` NumPy arrays (integer or one-hot labels) or an
            unbatched `tf.data.Dataset` of `(x, y)` pairs (a batched one is
            used as it is).
        recipe: a recipe name from `kd_keras.recipes.names()` or a `Recipe`.
        epochs: number of epochs; defaults to the recipe's.
        batch_size: batch size; defaults to the recipe's.
        validation_data: optional `(x, y)` or data set, evaluated every epoch
            on the student (clean data) with its teacher agreement.
        seed: seeds Python, NumPy, TensorFlow and the shuffle.
        callbacks: extra Keras callbacks.
        verbose: Keras `fit` verbosity (progress bar by default).
        **overrides: keyword overrides of the recipe's defaults, e.g.
            `temperature=2.0`.

    Returns:
        The trained `kd_keras.Distiller`; `.student` is the trained student and
        `.history` the Keras history.

    Example:
    ```python
    data = kd_keras.data.load_digits()
    distiller = kd_keras.distill(teacher, student, data.train, epochs=20,
                                 validation_data=data.test)
    ```
    """
    # Seeded first: a recipe built here draws its augmenter's seed.
    keras.utils.set_random_seed(seed)
    recipe = recipes.get(recipe, **overrides)
    epochs = int(epochs or recipe.epochs)
    batch_size = int(batch_size or recipe.batch_size)
    distiller = recipe.build(teacher, student)
    num_classes = teacher.output_shape[-1]
    train = _as_batches(train_data, batch_size, num_classes, True, seed, recipe)
    validation = None
    if validation_data is not None:
        validation = _as_batches(validation_data, batch_size, num_classes, False, seed)
    steps = int(train.cardinality())
    if steps == 0:
        raise kd_data.DataError("The training data is empty: pass at least one sample.")
    recipe.compile(distiller, steps_per_epoch=max(steps, 1), epochs=epochs)
    distiller.fit(
        train,
        epochs=epochs,
        validation_data=validation,
        callbacks=[*recipe.callbacks(epochs), *(callbacks or [])],
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    return distiller


def _as_batches(data, batch_size, num_classes, training, seed, recipe=None):
    augment = recipe.host_augment if recipe is not None else None
    if isinstance(data, tf.data.Dataset):
        if _is_batched(data):
            return data
        return kd_data.pipeline(data, batch_size, training, augment, seed)
    x, y = kd_data.check_arrays(*data, num_classes=num_classes)
    x = x.astype("float32") if np.issubdtype(x.dtype, np.floating) else x
    return kd_data.pipeline((x, y), batch_size, training, augment, seed)


def _is_batched(dataset):
    spec = dataset.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    return first.shape.rank is not None and first.shape.rank > 0 and first.shape[0] is None
