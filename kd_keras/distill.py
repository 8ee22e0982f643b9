"""`kd_keras.distill`: build a Distiller from a named recipe and fit it, in one call."""

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from kd_keras import _keras_compat
from kd_keras import data as kd_data
from kd_keras import precision as kd_precision
from kd_keras import recipes
from kd_keras import strategy as kd_strategy
from kd_keras.callbacks import backup as kd_backup
from kd_keras.callbacks import faults
from kd_keras.distiller import INPUTS
from kd_keras.distiller import TEACHER_LOGITS
from kd_keras.models.cast import cast_model
from kd_keras.models.strip_softmax import check_logits
from kd_keras.recipes import build


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
    backup=None,
    deterministic=False,
    strategy=None,
    precision=None,
    teacher_precision=None,
    data_augmentation=None,
    teacher_cache="auto",
    extra_losses=None,
    extra_loss_weights=None,
    **overrides,
):
    """Distil `teacher` into `student` with a named recipe and return the trained Distiller.

    Bad input fails before training, with the fix in the message: labels out
    of range or of the wrong type, NaN/Inf inputs, fewer samples than one
    batch, a teacher that outputs probabilities. Training stops with
    `kd_keras.callbacks.faults.NumericalFault` at the first step whose loss terms turn
    NaN/Inf. NumPy training data is shuffled in an order drawn from
    `(seed, epoch)`, so with `backup` an interrupted call, repeated, resumes
    on the batches it would have seen.

    Args:
        teacher: a trained `keras.Model` that outputs logits.
        student: the `keras.Model` to train; it outputs logits.
        train_data: `(x, y)` NumPy arrays (integer or one-hot labels) or an
            unbatched `tf.data.Dataset` of `(x, y)` pairs (a batched one is
            used as it is).
        recipe: a recipe name from `kd_keras.recipes.names()` or a recipe
            config (`kd_keras.recipes.get(...)`).
        epochs: number of epochs; defaults to the recipe's.
        batch_size: batch size; defaults to the recipe's.
        validation_data: optional `(x, y)` or data set, evaluated every epoch
            on the student (clean data) with its teacher agreement.
        seed: seeds Python, NumPy, TensorFlow and the shuffle.
        callbacks: extra Keras callbacks.
        verbose: Keras `fit` verbosity (progress bar by default).
        backup: a directory or a `kd_keras.callbacks.backup.Backup`: checkpoint every
            epoch there and, when it already holds a checkpoint, resume from
            it (the same call, repeated after an interruption).
        deterministic: enable TensorFlow's deterministic ops
            (`tf.config.experimental.enable_op_determinism`, process-wide
            and permanent), so the same call gives the same weights on GPU
            too; ops without a deterministic kernel then raise.
        strategy: a `tf.distribute.Strategy` or a name of
            `kd_keras.strategy.STRATEGIES` (`"mirrored"`, `"multiworker"`);
            None is one device. The Distiller, its optimisers and the
            models are created in `strategy.scope()`; `batch_size` is the
            global batch, and with several replicas the last partial batch
            of each epoch is dropped (so no replica gets an empty share).
        precision: the student's Keras dtype policy (`"float32"`,
            `"mixed_float16"`, `"mixed_bfloat16"`), or None to keep the
            student as built. Losses and softmaxes stay float32; under
            `mixed_float16` the optimisers scale the loss.
        teacher_precision: `"bfloat16"` or `"float16"` runs the frozen
            teacher's forward pass in that precision (a cast copy,
            `kd_keras.models.cast_model`), `"float32"` in float32, None as built.
        teacher_cache: compute the teacher's logits of the training inputs
            once, before training, and serve them to every view that shows
            the inputs unchanged (`View.deterministic`: plain KD, the clean
            half of mixing, HARD and backward views) instead of running the
            teacher on them every epoch. `"auto"` caches when that is exact:
            `(x, y)` arrays, no host augmentation, no feature losses (which
            need the teacher's forward pass); `True` insists (a `ValueError`
            says why it cannot); `False` never caches. Logits are kept in
            memory in float32 (float16 above `CACHE_BUDGET` bytes, live
            teacher above that); the returned Distiller's `teacher_cache`
            describes the cache (samples, classes, dtype, bytes) or is None.
        data_augmentation: the data's own per-sample tf.data augmentation
            (e.g. `kd_keras.data.standard_augmentation()`, pad-crop-flip), run
            after the recipe's host policy when it has one, as PBA does.
        extra_losses: distillation losses added to the recipe's (after its
            config's own `extra_losses`): loss objects such as
            `kd_keras.losses.HintDistillation(teacher_layer, student_layer)`
            or `keras.distillation.FeatureDistillation(...)`, or recipe
            specs (`{"class_name": "HintDistillation", ...}`). Features come
            from the passes that give the logits, with every augmenter.
        extra_loss_weights: one weight per extra loss (default 1 each), in
            Keras' convention: `total = a * student_loss + (1 - a) *
            sum_i w_i * L_i` over the recipe's losses and these.
        **overrides: recipe options (e.g. `temperature=2.0`) and config
            settings, top-level (`student_loss_weight=0.3`) or dotted
            (`**{"optimizer.learning_rate": 0.1}`), see `kd_keras.recipes.get`.

    Models and a strategy or precision: Keras 3 creates a model's variables
    where and how it is built, so `teacher` and `student` may also be
    zero-argument functions that build them (called in the strategy's scope,
    the student under `precision`). A model built elsewhere, or in another
    precision, is copied with its weights; the caller's object is never
    modified, and the trained student is always `distiller.student`.

    Returns:
        The trained `kd_keras.Distiller`; `.student` is the trained student and
        `.history` the Keras history.

    Example:
    ```python
    data = kd_keras.data.load_digits()
    distiller = kd_keras.distill(teacher, student, data.train, epochs=20,
                                 validation_data=data.test)
    # CutMixPick on top of a FitNets hint (Wang et al. report gains on top of feature losses):
    distiller = kd_keras.distill(
        teacher, student, data.train, recipe="cutmix_pick", epochs=20,
        extra_losses=[kd_keras.losses.HintDistillation("teacher_conv", "student_conv")],
        extra_loss_weights=[10.0])
    ```
    """
    if teacher_cache not in TEACHER_CACHE:
        raise ValueError(f"teacher_cache must be 'auto', True or False, got {teacher_cache!r}.")
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    kd_precision.check(precision or "float32", teacher_precision or "float32")
    strategy = kd_strategy.get(strategy or "default")
    config = _with_extra_losses(recipes.get(recipe, overrides), extra_losses, extra_loss_weights)
    epochs = _positive("epochs", config["epochs"] if epochs is None else epochs)
    batch_size = _positive("batch_size", config["batch_size"] if batch_size is None else batch_size)
    # Seeded before anything draws: the augmenter's seed, the student's
    # weights when it is built here.
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        teacher = _prepared(teacher, strategy, teacher_precision, building="float32")
        student = _prepared(student, strategy, precision, building=precision)
        distiller = build.distiller(config, teacher, student)
    host_augment = build.host_augment(config)
    if host_augment is None:
        host_augment = data_augmentation
    elif data_augmentation is not None:
        host_augment.then = data_augmentation
    num_classes = teacher.output_shape[-1]
    order = kd_data.SetEpoch()
    # Under several replicas a last partial batch may leave a replica with
    # no samples (a mean over nothing); drop it so every step splits evenly.
    drop_remainder = strategy.num_replicas_in_sync > 1
    # Before a host augmentation is traced on inputs it cannot take.
    _check_input_range(train_data, config, distiller.augmenter, host_augment)
    # The data are checked (building the pipeline) before the teacher sees them.
    train = _as_batches(
        train_data,
        batch_size,
        num_classes,
        True,
        seed,
        host_augment,
        order.epoch,
        drop_remainder=drop_remainder,
    )
    check_logits(teacher, _sample_inputs(train_data), "teacher")
    cached, distiller.teacher_cache = _with_teacher_cache(
        teacher_cache, train_data, teacher, distiller, host_augment, num_classes
    )
    if distiller.teacher_cache is not None:
        train = _as_batches(
            cached,
            batch_size,
            num_classes,
            True,
            seed,
            host_augment,
            order.epoch,
            drop_remainder=drop_remainder,
        )
    validation = None
    if validation_data is not None:
        if distiller.teacher_cache is not None and isinstance(validation_data, (tuple, list)):
            # Validation inputs never change either: the teacher's part of
            # every evaluation after the first is the same logits again.
            validation_data = _with_cached_logits(teacher, validation_data, num_classes)
            distiller.teacher_cache["validation_samples"] = len(validation_data[1])
            distiller.teacher_cache["bytes"] += validation_data[0][TEACHER_LOGITS].nbytes
        validation = _as_batches(validation_data, batch_size, num_classes, False, seed)
    steps = int(train.cardinality())
    if steps == 0:
        raise kd_data.DataError("The training data is empty: pass at least one sample.")
    with strategy.scope():
        build.compile(distiller, config, steps_per_epoch=max(steps, 1), epochs=epochs)
    distiller.fit(
        train,
        epochs=build.fit_epochs(config, epochs),
        validation_data=validation,
        # NaN checks before any callback that saves; the backup last, so its
        # checkpoint holds what every epoch-end callback left.
        callbacks=[
            order,
            faults.StopOnNonFinite(),
            *build.callbacks(config, epochs, host_augment),
            *(callbacks or []),
            *([_as_backup(backup)] if backup is not None else []),
        ],
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    return distiller


# Cached teacher logits above this many bytes are kept in float16; above it
# in float16 too, the teacher runs live.
CACHE_BUDGET = 1 << 30
TEACHER_CACHE = ("auto", True, False)


def _with_teacher_cache(mode, data, teacher, distiller, host_augment, num_classes):
    """Return `(data, cache)`: the data with the teacher's logits of its inputs, or as it is.

    Cached data is `({INPUTS: x, TEACHER_LOGITS: logits}, y)`; `cache` then
    describes the cache (`samples`, `classes`, `dtype`, `bytes`), else is None.
    """
    if mode is False:
        return data, None
    reason = None
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        reason = "the training data is not (x, y) arrays: pass arrays"
    elif host_augment is not None:
        reason = "the recipe augments on the host, so the teacher's inputs change every epoch"
    elif distiller.needs_teacher_features:
        reason = "feature losses need the teacher's forward pass"
    elif not distiller.augmenter.keeps_input:
        reason = "the augmenter shows no view of the inputs unchanged"
    if reason is None:
        x, y = kd_data.check_arrays(*data, num_classes=num_classes)
        if len(y) * num_classes * 2 > CACHE_BUDGET:
            reason = (
                f"{len(y):,} x {num_classes} logits exceed the cache's "
                f"{CACHE_BUDGET / 2**30:.0f} GiB even in float16"
            )
    if reason is not None:
        if mode is True:
            raise ValueError(f"teacher_cache=True, but {reason}; use teacher_cache='auto'.")
        return data, None
    cached = _with_cached_logits(teacher, (x, y), num_classes)
    logits = cached[0][TEACHER_LOGITS]
    cache = {
        "samples": int(logits.shape[0]),
        "classes": int(logits.shape[1]),
        "dtype": str(logits.dtype),
        "bytes": int(logits.nbytes),
        "validation_samples": 0,
    }
    return cached, cache


def _with_cached_logits(teacher, data, num_classes):
    """`({INPUTS: x, TEACHER_LOGITS: teacher(x)}, y)` for `(x, y)` arrays."""
    x, y = kd_data.check_arrays(*data, num_classes=num_classes)
    x = x.astype("float32") if np.issubdtype(x.dtype, np.floating) else x
    logits = np.asarray(teacher.predict(x, batch_size=256, verbose=0), "float32")
    if logits.nbytes > CACHE_BUDGET:
        logits = logits.astype("float16")
    return {INPUTS: x, TEACHER_LOGITS: logits}, y


def _with_extra_losses(config, losses, weights):
    """The config with `losses` (weights `weights`, 1 each by default) after its extra losses."""
    if losses is None:
        if weights is not None:
            raise ValueError("extra_loss_weights was given without extra_losses: drop it.")
        return config
    losses = list(losses)
    weights = [1.0] * len(losses) if weights is None else list(weights)
    if len(weights) != len(losses):
        raise ValueError(
            f"extra_loss_weights has {len(weights)} weights for {len(losses)} extra losses: "
            "give one per loss, or None for 1 each."
        )
    present = list(config.get("extra_losses") or [])
    present_weights = config.get("extra_loss_weights")
    if present_weights is None:
        present_weights = [1.0] * len(present)
    # The objects themselves, not copies: the caller's HintDistillation is
    # the one trained (its projection inspectable after fit).
    return {
        **config,
        "extra_losses": [*present, *losses],
        "extra_loss_weights": [*present_weights, *weights],
    }


def _check_input_range(data, config, augmenter, host_augment):
    """Refuse inputs outside the value range a recipe's augmentation assumes, before training."""
    recipe = config.get("name", "custom")
    for what, key, source in (
        ("augmenter", "augmenter", augmenter),
        ("host augmentation", "host_augment", host_augment),
    ):
        expected = getattr(source, "input_range", None)
        if expected is None:
            continue
        if isinstance(data, (tuple, list)):
            inputs = np.asarray(data[0])
        else:
            try:
                inputs = np.asarray(_sample_inputs(data, count=1024))
            except StopIteration:  # empty: the data checks that follow say so
                continue
        if not np.issubdtype(inputs.dtype, np.floating) or not np.isfinite(inputs).any():
            continue  # the data checks that follow name empty or non-finite inputs
        finite = inputs[np.isfinite(inputs)]
        low, high = float(finite.min()), float(finite.max())
        tolerance = 1e-6 * (expected[1] - expected[0])
        if low < expected[0] - tolerance or high > expected[1] + tolerance:
            spec = config.get(key)
            ranged = isinstance(spec, dict) and "value_range" in spec
            # Rounded outwards, so the suggested range holds every input.
            suggestion = f"[{math.floor(low * 100) / 100:g},{math.ceil(high * 100) / 100:g}]"
            raise ValueError(
                f"Recipe {recipe!r}: its {what} ({type(source).__name__}) makes views in "
                f"[{expected[0]:g}, {expected[1]:g}], but the training inputs range over "
                f"[{low:.3g}, {high:.3g}]: rescale the inputs into that range, "
                + (
                    f"give the {what} the inputs' range (--set {key}.value_range={suggestion}), "
                    if ranged
                    else ""
                )
                + "or use a recipe that takes any range "
                "(kd, mixup, cutmix, cutmix_pick, funmatch, hard)."
            )


def _prepared(model, strategy, dtype, building):
    if not isinstance(model, keras.Model) and callable(model):
        policy = contextlib.nullcontext() if building is None else kd_precision.policy(building)
        with policy:
            model = kd_strategy.place(model, strategy)
    if dtype is not None and not _uses_policy(model, dtype):
        return cast_model(model, dtype)
    return kd_strategy.place(model, strategy)


def _uses_policy(model, dtype):
    return all(
        layer.dtype_policy.name == dtype
        for layer in _keras_compat.flatten_layers(model, include_self=False)
        if layer.weights
    )


def _as_batches(
    data,
    batch_size,
    num_classes,
    training,
    seed,
    augment=None,
    epoch=None,
    drop_remainder=False,
):
    # Only training data must fill a batch; a small validation set is fine.
    minimum = batch_size if training else None
    if isinstance(data, tf.data.Dataset):
        kd_data.check_dataset(data, num_classes, minimum)
        if _is_batched(data):
            return data
        return kd_data.pipeline(
            data, batch_size, training, augment, seed, drop_remainder=drop_remainder
        )
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise kd_data.DataError(
            f"Expected (x, y) arrays or a tf.data.Dataset, got {type(data).__name__}: "
            "pass the inputs and labels as a pair."
        )
    x, y = data
    cached = None
    if isinstance(x, dict):  # inputs with their cached teacher logits
        x, cached = x[INPUTS], x[TEACHER_LOGITS]
    x, y = kd_data.check_arrays(x, y, num_classes=num_classes, batch_size=minimum)
    x = x.astype("float32") if np.issubdtype(x.dtype, np.floating) else x
    if cached is not None:
        x = {INPUTS: x, TEACHER_LOGITS: cached}
    return kd_data.pipeline(
        (x, y),
        batch_size,
        training,
        augment,
        seed,
        epoch=epoch,
        drop_remainder=drop_remainder,
    )


def _sample_inputs(data, count=64):
    if isinstance(data, tf.data.Dataset):
        batch = data if _is_batched(data) else data.batch(count)
        return next(iter(batch))[0][:count]
    return np.asarray(data[0][:count])


def _positive(name, value):
    try:
        valid = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def _as_backup(backup):
    if isinstance(backup, kd_backup.Backup):
        return backup
    return kd_backup.Backup(backup)


def _is_batched(dataset):
    spec = dataset.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    return first.shape.rank is not None and first.shape.rank > 0 and first.shape[0] is None
