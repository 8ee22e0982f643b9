"""`kd_keras.train_teacher`: train a teacher with cross-entropy before distilling."""

import keras

from kd_keras import data as kd_data
from kd_keras import recipes
from kd_keras import strategy as kd_strategy

SCHEDULES = ("adam", "crd")
# Each schedule's initial learning rate when none is given.
LEARNING_RATES = {"adam": 1e-3, "crd": 0.05}


def train_teacher(
    model,
    train_data,
    epochs=30,
    batch_size=64,
    learning_rate=None,
    validation_data=None,
    augment=None,
    seed=0,
    callbacks=None,
    verbose="auto",
    schedule="adam",
    strategy=None,
):
    """Train a logits model with cross-entropy, as the teacher of later runs.

    Two schedules: `"adam"` (Adam, learning rate 1e-3 cosine-decayed to
    zero; quick, the digits default) and `"crd"`, the CIFAR-100 teacher
    recipe of CRD / RepDistiller that trained the teachers of every table in
    METHODS.md: SGD momentum 0.9, learning rate 0.05, weight decay 5e-4,
    multiplied by 0.1 at epochs 150, 180 and 210 of 240 (the same fractions
    of a shorter run; the step decay of `kd_keras.recipes.blocks.crd_schedule`), with
    batch 64 and pad-crop-flip (`kd_keras.data.standard_augmentation()`) as
    `augment`, which `kd-keras train-teacher --schedule=crd` sets.

    Args:
        model: a `keras.Model` that outputs logits.
        train_data: `(x, y)` arrays or an unbatched `tf.data.Dataset`.
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: initial learning rate (None: 1e-3 for "adam", 0.05
            for "crd").
        validation_data: optional `(x, y)` or data set.
        augment: optional host-side `(image, label) -> pair` augmentation;
            one with a `callback(epochs)` method (a
            `kd_keras.augment.pba.PBAAugment`) also gets that callback, which
            moves its schedule from epoch to epoch.
        seed: seeds everything random.
        callbacks: extra Keras callbacks.
        verbose: Keras `fit` verbosity.
        schedule: `"adam"` or `"crd"` (see above).
        strategy: a `tf.distribute.Strategy` or a name of
            `kd_keras.strategy.STRATEGIES`; `model` may then be a
            zero-argument function that builds it in the strategy's scope
            (a model built outside is copied there with its weights).

    Returns:
        The trained model, compiled with accuracy (`model` itself unless it
        had to be copied into the strategy's scope).

    Example:
    ```python
    data = kd_keras.data.load_digits()
    teacher = kd_keras.train_teacher(kd_keras.models.get("cnn"), data.train)
    ```
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}.")
    strategy = kd_strategy.get(strategy or "default")
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = kd_strategy.place(model, strategy)
    if not isinstance(train_data, tuple):
        train = kd_data.pipeline(train_data, batch_size, True, augment, seed)
    else:
        x, y = kd_data.check_arrays(*train_data, num_classes=model.output_shape[-1])
        train = kd_data.pipeline((x, y), batch_size, True, augment, seed)
    steps_per_epoch = int(train.cardinality())
    with strategy.scope():
        model.compile(
            optimizer=_optimizer(schedule, learning_rate, steps_per_epoch, epochs),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    validation = None
    if validation_data is not None:
        validation = kd_data.pipeline(validation_data, batch_size, training=False)
    epoch_callbacks = []
    if callable(getattr(augment, "callback", None)):
        epoch_callbacks.append(augment.callback(epochs))
    model.fit(
        train,
        epochs=epochs,
        validation_data=validation,
        callbacks=[*epoch_callbacks, *(callbacks or [])],
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    return model


def _optimizer(schedule, learning_rate, steps_per_epoch, epochs):
    if schedule == "crd":
        if steps_per_epoch <= 0:
            raise ValueError(
                "The CRD schedule decays at fractions of the run, but the training "
                "data has no known length: pass arrays or a data set of known cardinality."
            )
        # The KD recipe's optimiser is CRD's: the same SGD and step decay.
        crd = recipes.kd()
        crd["optimizer"]["learning_rate"] = learning_rate or LEARNING_RATES["crd"]
        return recipes.build.optimizer(crd, steps_per_epoch, epochs)
    rate = learning_rate or LEARNING_RATES["adam"]
    # A pipeline of unknown length has no schedule to decay over: keep the
    # rate constant rather than decaying it to zero after one step.
    if steps_per_epoch > 0:
        rate = keras.optimizers.schedules.CosineDecay(rate, steps_per_epoch * epochs)
    return keras.optimizers.Adam(rate)
