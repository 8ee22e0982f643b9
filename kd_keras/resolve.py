"""Models by name and the checks every job makes: load, resolve a teacher, refuse one at chance.

The jobs (`kd_keras.jobs`) and the policy search (`kd_keras.search`) both
resolve their models here, so the search never imports the jobs.
"""

import os
import pathlib
import zipfile

import keras
import numpy as np

from kd_keras import models as kd_models
from kd_keras import shipped
from kd_keras.teacher import train_teacher


class RunError(RuntimeError):
    """A job that cannot run, with the fix in its one-line message."""


def load_model(path, safe_mode=True):
    """Load a `.keras` model, by default in Keras' safe mode, with a clear error if it fails.

    Safe mode refuses files that run Python code when loaded (a `Lambda`
    layer's function); pass `safe_mode=False` only for files you trust.

    Args:
        path: path of a `.keras` file.
        safe_mode: refuse Python code in the file (`Lambda` layers).

    Returns:
        The `keras.Model`.

    Example:
    ```python
    teacher = kd_keras.resolve.load_model("saved_models/digits_cnn_teacher.keras")
    ```
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise RunError(f"Model file {path} does not exist: check the path.")
    if not zipfile.is_zipfile(path):
        # Keras says "File not found" for a file that is there but no archive.
        raise RunError(
            f"{path} is not a valid .keras file (not a zip archive: corrupt, "
            f"truncated or another format): {_rebuild_hint(path)}."
        )
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode)
    except Exception as error:  # Keras raises many types for corrupt files.
        if safe_mode and "safe_mode" in str(error):
            raise RunError(
                f"Model {path} contains Python code (a Lambda layer), which safe "
                "mode refuses: if you trust the file, pass --unsafe_deserialization "
                "(load_model(..., safe_mode=False))."
            ) from error
        raise RunError(
            f"{path} is not a valid .keras file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no message'}): "
            f"{_rebuild_hint(path)}."
        ) from error


def _rebuild_hint(path):
    card = path.with_suffix(".json")
    if card.is_file():
        return f"rebuild it with the command in its card {card}"
    return "save the model again with model.save(...) and pass that file"


def resolve_teacher(spec, bundle, seed=0, epochs=30, batch_size=64, verbose="auto", safe_mode=True):
    """Return a trained teacher from a shipped name, a `.keras` path or a zoo name.

    A zoo name (e.g. `"resnet56"`) builds that model and trains it on the
    bundle's training data first, so a one-line command can start from scratch.
    """
    if spec.startswith("shipped:"):
        filename = f"{spec[len('shipped:') :]}_teacher.keras"
        teacher = load_model(shipped.path(filename))
    elif spec.endswith(".keras") or os.sep in spec:
        teacher = load_model(spec, safe_mode=safe_mode)
    elif spec in kd_models.names():
        teacher = kd_models.get(spec, bundle.input_shape, bundle.num_classes, **bundle.model_kwargs)
        train_teacher(
            teacher,
            bundle.train,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=bundle.test,
            seed=seed,
            verbose=verbose,
        )
    else:
        raise RunError(
            f"Unknown teacher {spec!r}: give a .keras path, 'shipped:digits_cnn' "
            f"or a zoo name ({', '.join(kd_models.names())})."
        )
    check_fits(
        teacher,
        bundle,
        "teacher",
        fix="give a teacher built for this data set, or no --teacher for its default",
    )
    return teacher


def check_fits(model, bundle, role, fix=None):
    fix = fix or f"use a {role} built for this data set"
    if tuple(model.input_shape[1:]) != tuple(bundle.input_shape):
        raise RunError(
            f"The {role} takes inputs of shape {tuple(model.input_shape[1:])} but "
            f"{bundle.name} has {tuple(bundle.input_shape)}: {fix}{_data_hint(model)}."
        )
    if model.output_shape[-1] != bundle.num_classes:
        raise RunError(
            f"The {role} outputs {model.output_shape[-1]} classes but "
            f"{bundle.name} has {bundle.num_classes}: {fix}{_data_hint(model)}."
        )


def _data_hint(model):
    # The offline data sets a model of this shape may be for.
    shape = tuple(model.input_shape[1:])
    if len(shape) == 1:
        return f" (token ids of length {shape[0]}: --dataset=text-default or a TFDS text set)"
    if shape == (28, 28, 1):
        return " (28x28 grey images: --dataset=digits)"
    return ""


# A teacher is "near chance" when its Cohen's kappa on the evaluation data is
# below this: its predictions remove less than a tenth of the errors that
# guessing with its own class frequencies would make (10 balanced classes:
# accuracy below 19%). Kappa, unlike accuracy, is 0 for a network that
# predicts one class whatever the class balance.
WEAK_TEACHER_KAPPA = 0.1
# Enough test samples to tell a teacher from chance; a full pass over a large
# TFDS test set would cost a run minutes before it starts.
TEACHER_CHECK_SAMPLES = 2048


def teacher_quality(logits, labels):
    """Return accuracy, chance agreement and Cohen's kappa of predictions against labels.

    Chance is the accuracy expected of guessing with the predictions' own
    class frequencies, `sum_k p_pred(k) p_true(k)` (1 / classes for balanced
    labels); kappa is `(accuracy - chance) / (1 - chance)`: 1 for a perfect
    network, 0 for a guess or for one that always predicts the same class.

    Args:
        logits: `(n, classes)` scores.
        labels: `(n,)` class ids or `(n, classes)` probabilities.

    Returns:
        A dict with `accuracy`, `chance` and `kappa`.

    Example:
    ```python
    quality = kd_keras.resolve.teacher_quality(teacher.predict(x), y)
    ```
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    predicted = logits.argmax(-1)
    classes = logits.shape[-1]
    accuracy = float(np.mean(predicted == labels))
    chance = float(
        np.dot(
            np.bincount(predicted, minlength=classes) / len(labels),
            np.bincount(labels.astype("int64"), minlength=classes)[:classes] / len(labels),
        )
    )
    kappa = (accuracy - chance) / (1.0 - chance) if chance < 1.0 else float(accuracy == 1.0)
    return {"accuracy": accuracy, "chance": chance, "kappa": float(kappa)}


def check_teacher(teacher, split, data_name, allow_weak=False, count=TEACHER_CHECK_SAMPLES):
    """Refuse a teacher whose predictions on `split` are near chance; return its quality.

    Near chance means Cohen's kappa below `WEAK_TEACHER_KAPPA` (see
    `teacher_quality`): such a teacher (e.g. a short run whose BatchNorm
    statistics never converged) teaches nothing, and a run on it would
    report a perfect teacher-student agreement with noise.

    Args:
        teacher: the teacher model.
        split: `(x, y)` arrays or a labelled `tf.data.Dataset`; at most
            `count` samples are scored.
        data_name: the data's name, for the message.
        allow_weak: only return the quality (the `--allow_weak_teacher` flag).
        count: samples scored.

    Returns:
        The `teacher_quality` dict.

    Raises:
        RunError: the teacher is near chance and `allow_weak` is False.

    Example:
    ```python
    kd_keras.resolve.check_teacher(teacher, data.test, "digits")
    ```
    """
    if isinstance(split, tuple):
        split = (split[0][:count], split[1][:count])
    else:
        split = split.take(count)
    quality = teacher_quality(*predict_split(teacher, split))
    if quality["kappa"] < WEAK_TEACHER_KAPPA and not allow_weak:
        raise RunError(weak_teacher_message(quality, data_name))
    return quality


def weak_teacher_message(quality, data_name, subject="The teacher"):
    """The one-line error for a teacher near chance, with the fixes."""
    return (
        f"{subject} is near chance on {data_name}: accuracy {quality['accuracy']:.2%}, "
        f"chance {quality['chance']:.2%} (Cohen's kappa {quality['kappa']:.2f} < "
        f"{WEAK_TEACHER_KAPPA}): train it longer (BatchNorm's moving statistics need a "
        "few hundred steps) or check its data, or pass --allow_weak_teacher "
        "(allow_weak_teacher=True) to use it anyway."
    )


def evaluate(model, split, batch_size=256):
    """Return top-1 accuracy of `model` on `(x, y)` arrays or a labelled data set."""
    logits, labels = predict_split(model, split, batch_size)
    return float(np.mean(logits.argmax(-1) == labels))


def predict_split(model, split, batch_size=256):
    """Return `(logits, labels)` of `model` over a split, as NumPy arrays."""
    if isinstance(split, tuple):
        x, y = split
        return model.predict(x, batch_size=batch_size, verbose=0), np.asarray(y)
    logits, labels = [], []
    for x, y in split.batch(batch_size).as_numpy_iterator():
        logits.append(model.predict_on_batch(x))
        labels.append(y)
    return np.concatenate(logits), np.concatenate(labels)
