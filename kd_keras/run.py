"""Whole jobs behind the `kd-keras` command: a distillation run, a teacher, an export.

Each job loads data and models by name, trains, evaluates, exports and writes
a run directory. Every file in it is written under a temporary name and
renamed, so none is ever half-written. A distillation run checkpoints every
epoch: interrupted (Ctrl-C, SIGTERM, SIGKILL) or stopped by a numerical
fault, it keeps its directory, and the same command resumes it; a run that
fails before its first checkpoint removes the directory it created.
"""

import contextlib
import glob
import json
import os
import pathlib
import shutil
import tempfile
import time
import zipfile

import keras
import numpy as np

from kd_keras import atomic
from kd_keras import backup as kd_backup
from kd_keras import callbacks as kd_callbacks
from kd_keras import data as kd_data
from kd_keras import export as kd_export
from kd_keras import faults
from kd_keras import models as kd_models
from kd_keras import precision as kd_precision
from kd_keras import recipes
from kd_keras.recipes import build
from kd_keras import shipped
from kd_keras import strategy as kd_strategy
from kd_keras import teacher as teacher_module
from kd_keras import text_data
from kd_keras.augment import pba
from kd_keras.augment.policy import PolicyTrajectory
from kd_keras.distill import distill
from kd_keras.models.cast import cast_model
from kd_keras.teacher import train_teacher

DEFAULT_TEACHER = "shipped:digits_cnn"
# A digits run is small: 30 epochs of KD take about a minute on 2 cores and
# reach the accuracy plateau; the recipes' own defaults are the papers'.
DIGITS_EPOCHS = 30
# Text runs default to the text zoo: the shipped transformer teacher on the
# offline task (a zoo transformer, trained first, on a TFDS text set) and a
# CNN student, when no teacher or student is given.
DEFAULT_TEXT_TEACHER = "shipped:text_default"
DEFAULT_TEXT_STUDENT = "text_cnn"
TEXT_DEFAULT_EPOCHS = 10
# Inside a run directory: the command's settings (an unfinished run resumes
# only under the same ones), the epoch checkpoint, a teacher trained by the run.
RUN_FILE = "run.json"
BACKUP_DIR = "backup"
TEACHER_FILE = "teacher.keras"
# Where the default, time-stamped output paths live (relative to the working directory).
DEFAULT_RUNS = pathlib.Path("runs")


class RunError(RuntimeError):
    """A job that cannot run, with the fix in its one-line message."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: where it was and what it kept.

    Args:
        out: the run directory.
        checkpoint_epoch: the epoch of the last checkpoint kept in it, or None.
        kept: whether the directory was kept (it holds a checkpoint or a
            trained teacher to resume from); False when it was removed.
    """

    def __init__(self, out, checkpoint_epoch, kept):
        super().__init__(str(out))
        self.out = pathlib.Path(out)
        self.checkpoint_epoch = checkpoint_epoch
        self.kept = kept


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
    teacher = kd_keras.run.load_model("saved_models/digits_cnn_teacher.keras")
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


def resolve_teacher(
    spec, bundle, seed=0, epochs=30, batch_size=64, verbose="auto", safe_mode=True
):
    """Return a trained teacher from a shipped name, a `.keras` path or a zoo name.

    A zoo name (e.g. `"resnet56"`) builds that model and trains it on the
    bundle's training data first, so a one-line command can start from scratch.
    """
    if spec.startswith("shipped:"):
        filename = f"{spec[len('shipped:'):]}_teacher.keras"
        teacher = load_model(shipped.path(filename))
    elif spec.endswith(".keras") or os.sep in spec:
        teacher = load_model(spec, safe_mode=safe_mode)
    elif spec in kd_models.names():
        teacher = kd_models.get(spec, bundle.input_shape, bundle.num_classes, **bundle.model_kwargs)
        train_teacher(
            teacher, bundle.train, epochs=epochs, batch_size=batch_size,
            validation_data=bundle.test, seed=seed, verbose=verbose,
        )
    else:
        raise RunError(
            f"Unknown teacher {spec!r}: give a .keras path, 'shipped:digits_cnn' "
            f"or a zoo name ({', '.join(kd_models.names())})."
        )
    _check_fits(
        teacher, bundle, "teacher",
        fix="give a teacher built for this data set, or no --teacher for its default",
    )
    return teacher


def _check_fits(model, bundle, role, fix=None):
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
    quality = kd_keras.run.teacher_quality(teacher.predict(x), y)
    ```
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    predicted = logits.argmax(-1)
    classes = logits.shape[-1]
    accuracy = float(np.mean(predicted == labels))
    chance = float(np.dot(
        np.bincount(predicted, minlength=classes) / len(labels),
        np.bincount(labels.astype("int64"), minlength=classes)[:classes] / len(labels),
    ))
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
    kd_keras.run.check_teacher(teacher, data.test, "digits")
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


@contextlib.contextmanager
def _run_directory(out, signature=None):
    out = pathlib.Path(out)
    _check_unfinished(out, signature)
    created = not out.exists()
    new_parents = [parent for parent in out.parents if not parent.exists()]
    out.mkdir(parents=True, exist_ok=True)
    if signature is not None:
        _write_json(out / RUN_FILE, signature)
    try:
        yield out
    except BaseException as error:
        # An interrupted or diverged run keeps what it can resume from; one
        # that failed earlier leaves nothing behind, not even the runs/
        # folder it made for itself.
        kept = _resumable(out) or not created
        if not kept:
            shutil.rmtree(out, ignore_errors=True)
            for parent in new_parents:  # innermost first; only empty ones:
                with contextlib.suppress(OSError):  # another run may be in runs/ now
                    parent.rmdir()
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, Interrupted):
            checkpoint = kd_backup.read_checkpoint(out / BACKUP_DIR) if kept else None
            raise Interrupted(out, checkpoint and checkpoint["epoch"], kept) from error
        raise


def _check_unfinished(out, signature=None):
    """Refuse a finished run, another command's unfinished run, or a directory we cannot write."""
    if (out / "metrics.json").exists():
        raise RunError(f"{out} already holds a finished run: choose another --out.")
    _check_writable(out)
    path = out / RUN_FILE
    if signature is None or not path.is_file() or not _resumable(out):
        return
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        stored = None
    if stored != signature:
        raise RunError(
            f"{out} holds an unfinished run of another command ({path} differs): "
            "rerun that command to resume it, or choose another --out."
        )


def _check_writable(out, what="the run directory"):
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(
            f"Cannot create {what} {out}: {existing} is a file; choose another --out."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise RunError(
            f"Cannot write {what} {out} ({error.strerror or error}): "
            "choose a writable --out."
        ) from error


def _resumable(out):
    return (out / BACKUP_DIR / kd_backup.CHECKPOINT).exists() or (out / TEACHER_FILE).exists()


def _write_json(path, content):
    # Written to a temporary name and renamed, so a reader never sees half a file.
    atomic.write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def default_out(kind, recipe, dataset):
    """Return the time-stamped default output path, `runs/<kind>-<recipe>-<dataset>-<time>`."""
    return DEFAULT_RUNS / f"{_run_prefix(kind, recipe, dataset)}{time.strftime('%Y%m%d-%H%M%S')}"


def _run_prefix(kind, recipe, dataset):
    return f"{kind}-{recipe}-{dataset.replace(':', '_')}-"


def find_unfinished(prefix, signature):
    """Return the latest unfinished, resumable run directory `<prefix>*` of `signature`, or None.

    What `distill_job` without `out` resumes: a directory whose `run.json`
    equals this command's settings, which has no `metrics.json` and holds a
    checkpoint (or a trained teacher). The latest is the last by name (the
    default names end in a time stamp).

    Args:
        prefix: path prefix of the candidates, e.g. `runs/distill-hard-digits-`.
        signature: the settings the candidate's `run.json` must equal.

    Returns:
        A `pathlib.Path`, or None.

    Example:
    ```python
    kd_keras.run.find_unfinished("runs/distill-hard-digits-", signature)
    ```
    """
    prefix = pathlib.Path(prefix)
    if not prefix.parent.is_dir():
        return None
    candidates = sorted(prefix.parent.glob(f"{glob.escape(prefix.name)}*"), reverse=True)
    for candidate in candidates:
        if not candidate.is_dir() or (candidate / "metrics.json").exists():
            continue
        if not _resumable(candidate):
            continue
        try:
            stored = json.loads((candidate / RUN_FILE).read_text())
        except (OSError, ValueError):
            continue
        if stored == signature:
            return candidate
    return None


def distill_job(
    recipe="kd",
    dataset=kd_data.DIGITS,
    teacher=None,
    student=None,
    epochs=None,
    batch_size=None,
    seed=0,
    out=None,
    export_formats=("keras", "saved_model", "tflite"),
    data_dir=None,
    download="auto",
    teacher_epochs=30,
    verbose="auto",
    student_bits=None,
    strategy="default",
    precision="float32",
    teacher_precision="float32",
    deterministic=False,
    safe_mode=True,
    allow_weak_teacher=False,
    teacher_cache="auto",
    **overrides,
):
    """Run a whole distillation job and write its run directory; return its metrics.

    The run directory holds `metrics.json`, TensorBoard logs in `logs/`, the
    student exported in each of `export_formats` (each checked for parity
    with the Keras student), for recipes with an augmenter or a host-side
    policy (rolewise) `views.png`, the last labelled grid of original vs
    augmented test images with the teacher's and student's predictions, and for a learned policy
    `policy.json` and `policy.png`, its trajectory. A teacher given as a zoo
    name is trained first and kept as `teacher.keras`.

    The job is resumable: it checkpoints every epoch in `backup/` and records
    its settings in `run.json`; the same call on the same `out` (or again
    without `out`) after an interruption (or a
    `kd_keras.faults.NumericalFault`) continues from the last checkpoint and
    trains the steps an uninterrupted run would. An interruption raises
    `Interrupted` (a `KeyboardInterrupt`) naming the directory and its last
    checkpoint. `metrics.json` marks a finished run, which is never
    overwritten.

    Args:
        recipe: recipe name.
        dataset: `"digits"`, `"text-default"` or `"tfds:NAME"`.
        teacher: `"shipped:digits_cnn"`, a `.keras` path or a zoo name;
            None: the data set's default, `"shipped:digits_cnn"` on image
            data, `"shipped:text_default"` on text-default and
            `"text_transformer"` on TFDS text sets. A teacher given is used
            as given, and refused if it does not fit the data.
        student: a zoo name; None: `"mlp"`, or `"text_cnn"` on text data.
        epochs: epochs (default: 30 on digits, 10 on text-default, the
            recipe's elsewhere).
        batch_size: batch size (default: the recipe's).
        seed: seed of everything random.
        out: run directory; None: the latest unfinished run under `runs/`
            whose `run.json` equals this call's settings, resumed (a line
            says which), else a new `runs/distill-<recipe>-<dataset>-<time>`.
        export_formats: formats of `kd_keras.export.FORMATS`.
        data_dir: TFDS data directory.
        download: TFDS download policy (see `kd_keras.data.load_tfds`).
        teacher_epochs: epochs of the teacher when `teacher` is a zoo name.
        verbose: Keras verbosity.
        student_bits: bits of a low-bit (DoReFa) student, see
            `kd_keras.quantize`; None keeps it full precision.
        strategy: `"default"`, `"mirrored"` or `"multiworker"` (cluster from
            `TF_CONFIG`; every worker runs the job, only the chief keeps a
            run directory), see `kd_keras.strategy`.
        precision: the student's dtype policy (`kd_keras.precision.PRECISIONS`);
            it is exported in float32.
        teacher_precision: the frozen teacher's forward precision
            (`"float32"`, `"bfloat16"`, `"float16"`).
        deterministic: TensorFlow's deterministic ops (see `kd_keras.distill`).
        safe_mode: refuse a teacher `.keras` file holding Python code
            (`Lambda` layers); `False` only for files you trust.
        allow_weak_teacher: distil from a teacher near chance on the test
            data (see `check_teacher`) instead of refusing it.
        teacher_cache: `"auto"`, `True` or `False` (see `kd_keras.distill`).
        **overrides: recipe overrides.

    Returns:
        The metrics dictionary written to `metrics.json`, with the
        optimisers' step counts and the epoch the run resumed from.

    Example:
    ```python
    metrics = kd_keras.run.distill_job(epochs=5, out="runs/try")
    ```
    """
    started = time.perf_counter()
    # First of all: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = kd_strategy.get(strategy)
    kd_precision.check(precision, teacher_precision)
    unknown = sorted(set(export_formats) - set(kd_export.FORMATS))
    if unknown:
        raise RunError(
            f"Unknown export format {', '.join(unknown)}: choose from "
            f"{', '.join(kd_export.FORMATS)}."
        )
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    if out is not None:
        _check_writable(pathlib.Path(out))
    # The recipe's settings and files (a policy schedule) are checked before
    # any data loads.
    config = recipes.get(recipe, overrides, teacher=teacher, student=student)
    build.host_augment(config)
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    text = isinstance(bundle, text_data.TextDataBundle)
    if teacher is None:
        teacher = DEFAULT_TEACHER
        if text:
            teacher = DEFAULT_TEXT_TEACHER if dataset == text_data.TEXT_DEFAULT else "text_transformer"
    if student is None:
        student = DEFAULT_TEXT_STUDENT if text else "mlp"
    config = resolve_config(recipe, overrides, teacher, student, bundle)
    if epochs is None and dataset == kd_data.DIGITS:
        epochs = DIGITS_EPOCHS
    if epochs is None and dataset == text_data.TEXT_DEFAULT:
        epochs = TEXT_DEFAULT_EPOCHS
    # Natural-image sets get the papers' standard pad-crop-flip (after a PBA
    # policy, as PBA's CIFAR pipeline does); digits stay centred, which is
    # what the shifted test measures.
    data_augmentation = (
        kd_data.standard_augmentation() if dataset != kd_data.DIGITS and not text else None
    )
    epochs = int(config["epochs"] if epochs is None else epochs)
    batch_size = int(batch_size or config["batch_size"])
    _check_data(bundle, batch_size)
    signature = _signature(
        recipe=recipe, dataset=dataset, teacher=teacher, student=student,
        student_bits=student_bits, precision=precision,
        teacher_precision=teacher_precision, epochs=epochs, batch_size=batch_size,
        seed=seed,
        # A run stopped by a NaN may resume from its last checkpoint at a lower rate.
        overrides={
            k: v for k, v in overrides.items()
            if k not in ("learning_rate", "optimizer.learning_rate")
        },
    )
    chief = kd_strategy.is_chief(strategy)
    if out is None and not kd_strategy.is_multi_worker(strategy):
        # The same command without --out continues its latest unfinished run
        # (multi-worker runs do not resume: the other workers start afresh).
        out = find_unfinished(DEFAULT_RUNS / _run_prefix("distill", recipe, dataset), signature)
        if out is not None:
            epoch = (kd_backup.read_checkpoint(out / BACKUP_DIR) or {}).get("epoch", 0)
            print(
                f"Resuming the unfinished run {out} of the same command, from the end of "
                f"epoch {epoch} (--out=DIR starts a new run elsewhere)."
            )
    out = pathlib.Path(out or default_out("distill", recipe, dataset))
    if not chief:
        # Every worker trains; only the chief keeps a run directory.
        out = pathlib.Path(tempfile.mkdtemp(prefix="kd-keras-worker-")) / "run"
    _check_unfinished(out, signature)
    trained_teacher = out / TEACHER_FILE
    reuse_teacher = teacher in kd_models.names() and trained_teacher.exists()
    with strategy.scope():
        teacher_model = resolve_teacher(
            str(trained_teacher) if reuse_teacher else teacher, bundle, seed,
            epochs=teacher_epochs, verbose=verbose, safe_mode=safe_mode,
        )
    check_teacher(teacher_model, bundle.test, f"the {dataset} test data", allow_weak_teacher)
    if student not in kd_models.names():
        raise RunError(
            f"Unknown student {student!r}: choose one of {', '.join(kd_models.names())}."
        )
    # Before anything draws: the student's initial weights come from this seed.
    keras.utils.set_random_seed(seed)
    with strategy.scope(), kd_precision.policy(precision):
        student_model = kd_models.get(
            student, bundle.input_shape, bundle.num_classes, bits=student_bits,
            **bundle.model_kwargs,
        )
    with _run_directory(out, signature):
        if teacher in kd_models.names() and not reuse_teacher:
            # A resumed run must not train (and get) another teacher.
            with atomic.replacing(trained_teacher) as temporary:
                teacher_model.save(temporary)
        backup = kd_backup.Backup(
            out / BACKUP_DIR, signature=signature, delete_checkpoint=False
        )
        callbacks = [kd_callbacks.TensorBoard(str(out / "logs"))]
        _write_json(out / "config.json", json.loads(recipes.to_json(config)))
        snapshots = collapse = None
        images = len(bundle.input_shape) == 3
        host = build.host_augment(config)
        if images and config["augmenter"] is not None:
            # People want to see what the augmenter makes: a grid of original
            # vs augmented test images in TensorBoard, the last one as a PNG.
            snapshots = kd_callbacks.ViewSnapshots(
                out / "logs", bundle.sample("test", 8), every=max(1, epochs // 10)
            )
            collapse = faults.CollapseMonitor(
                bundle.sample("test", 32), every=max(1, epochs // 10)
            )
            callbacks += [snapshots, collapse]
        elif images and host is not None:
            # A policy applied on the host (rolewise's PBA schedule): the same
            # grid, of what the input pipeline makes of the test images.
            snapshots = kd_callbacks.ViewSnapshots(
                out / "logs", bundle.sample("test", 8), every=max(1, epochs // 10),
                augment=host.augment_batch,
            )
            callbacks.append(snapshots)
        if (config["augmenter"] or {}).get("class_name") == "LearnedPolicy":
            # A learned policy's magnitudes and probabilities, epoch by epoch.
            callbacks.append(PolicyTrajectory(out))
        if host is not None:
            # The student agent's PBA schedule, beside the student it trained.
            host.schedule.save(out / "pba_schedule.json")
        distiller = distill(
            teacher_model,
            student_model,
            bundle.train,
            recipe=config,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=bundle.test,
            seed=seed,
            callbacks=callbacks,
            verbose=verbose,
            strategy=strategy,
            precision=precision,
            teacher_precision=teacher_precision,
            backup=backup,
            deterministic=deterministic,
            data_augmentation=data_augmentation,
            teacher_cache=teacher_cache,
        )
        if snapshots is not None:
            snapshots.save_png(out / "views.png")
        train_seconds = time.perf_counter() - started
        metrics = {
            "recipe": recipe,
            "dataset": dataset,
            "teacher": teacher,
            "student": student,
            "student_bits": student_bits,
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "precision": precision,
            "teacher_precision": teacher_precision,
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "teacher_parameters": int(teacher_model.count_params()),
            "student_parameters": int(student_model.count_params()),
            **_accuracies(teacher_model, student_model, bundle),
            "optimizer_steps": _optimizer_steps(distiller),
            "resumed_from_epoch": backup.restored_epoch,
            "teacher_cache": distiller.teacher_cache,
        }
        if collapse is not None:
            metrics["augmenter_collapsed_epochs"] = collapse.collapsed_epochs
        metrics["exports"] = kd_export.export_student(
            # Mixed precision is for training: ship float32.
            cast_model(distiller.student, "float32")
            if precision != "float32" else distiller.student,
            out,
            formats=export_formats,
            check_data=bundle.sample("test", 512),
            representative_data=bundle.sample("train", 200),
            # Left by an attempt that stopped while exporting this same run.
            overwrite=True,
        )
        if text:
            # The ids mean nothing without it: serve the student on strings
            # with text_data.serving_model(text_data.load_tokenizer(...), ...).
            text_data.save_vocabulary(bundle.tokenizer, out / "vocabulary.txt")
        metrics["train_seconds"] = train_seconds
        metrics["wall_seconds"] = time.perf_counter() - started
        _write_json(out / "metrics.json", metrics)
        atomic.remove(out / BACKUP_DIR)
    if not chief:
        shutil.rmtree(out.parent, ignore_errors=True)
    metrics["out"] = str(out) if chief else None
    return metrics


def resolve_config(recipe, overrides, teacher, student, bundle):
    """The recipe config of a job: its options, the pair's settings, the data's vocabulary.

    Args:
        recipe: a recipe name.
        overrides: recipe options and config settings (see `kd_keras.recipes.get`).
        teacher: the teacher's spec (a zoo name picks per-pair settings).
        student: the student's zoo name.
        bundle: the `kd_keras.data.DataBundle` it runs on.

    Returns:
        The config dict.
    """
    config = recipes.get(recipe, overrides, teacher=teacher, student=student)
    augmenter = config["augmenter"]
    if augmenter and "vocabulary_size" in augmenter and augmenter["vocabulary_size"] is None:
        # An augmenter that one-hots token ids needs the vocabulary size,
        # known only once the data is loaded.
        augmenter["vocabulary_size"] = bundle.model_kwargs.get("vocabulary_size")
    return config


def _check_positive(name, value):
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
        raise RunError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_data(bundle, batch_size):
    # Before any directory exists: a batch larger than the data (or bad
    # arrays) must not leave an empty run directory behind.
    if isinstance(bundle.train, tuple):
        kd_data.check_arrays(*bundle.train, num_classes=bundle.num_classes, batch_size=batch_size)


def _signature(**settings):
    # Compared with the JSON stored in run.json, so made of JSON types.
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))


def _optimizer_steps(distiller):
    steps = {"student": int(distiller.optimizer.iterations.numpy())}
    if distiller.augmenter_optimizer is not None:
        steps["augmenter"] = int(distiller.augmenter_optimizer.iterations.numpy())
    return steps


def _accuracies(teacher, student, bundle):
    teacher_logits, labels = predict_split(teacher, bundle.test)
    student_logits, _ = predict_split(student, bundle.test)
    result = {
        "teacher_accuracy": float(np.mean(teacher_logits.argmax(-1) == labels)),
        "student_accuracy": float(np.mean(student_logits.argmax(-1) == labels)),
        "agreement": float(
            np.mean(teacher_logits.argmax(-1) == student_logits.argmax(-1))
        ),
    }
    if bundle.test_shifted is not None:
        result["teacher_accuracy_shifted"] = evaluate(teacher, bundle.test_shifted)
        result["student_accuracy_shifted"] = evaluate(student, bundle.test_shifted)
    return result


def train_teacher_job(
    model="cnn",
    dataset=kd_data.DIGITS,
    epochs=None,
    batch_size=64,
    learning_rate=None,
    seed=0,
    out=None,
    data_dir=None,
    download="auto",
    command=None,
    verbose="auto",
    policy=None,
    schedule="adam",
    strategy="default",
    precision="float32",
    allow_weak_teacher=False,
):
    """Train a teacher, save it as `.keras` with a JSON card beside it; return the card.

    A teacher near chance on the test data (Cohen's kappa below
    `WEAK_TEACHER_KAPPA`, see `check_teacher`) is still written, with its
    card, but the job then raises `RunError` saying so, unless
    `allow_weak_teacher`: `distill_job` and `kd_keras.search.search` refuse
    such a teacher too.

    Args:
        model: zoo name of the teacher.
        dataset: `"digits"` or `"tfds:NAME"`.
        epochs: training epochs (default: 30, or 240 with `schedule="crd"`).
        batch_size: batch size.
        learning_rate: initial learning rate (default: the schedule's).
        seed: seed of everything random.
        out: path of the `.keras` file to write (its card is `<out>.json`).
        data_dir: TFDS data directory.
        download: TFDS download policy.
        command: the command line to record in the card.
        verbose: Keras verbosity.
        policy: the teacher agent of role-wise KD: a PBA schedule JSON path
            (or a `kd_keras.augment.pba.Schedule`) applied to the training
            images, recorded in the card; None trains without augmentation.
        schedule: `"adam"` or `"crd"`, the CIFAR-100 teacher recipe of CRD
            (SGD 0.05, step decay, see `kd_keras.train_teacher`), which also
            pad-crops and flips natural images.
        strategy: `"default"`, `"mirrored"` or `"multiworker"` (only the
            chief writes the teacher).
        precision: the dtype policy the teacher trains in; it is saved in
            float32.
        allow_weak_teacher: return normally for a teacher near chance.

    Returns:
        The card dictionary (data, accuracy clean and shifted, chance
        accuracy and kappa, seed, command, policy).

    Example:
    ```python
    card = kd_keras.run.train_teacher_job("cnn", epochs=30, out="teacher.keras")
    ```
    """
    started = time.perf_counter()
    strategy = kd_strategy.get(strategy)  # before TensorFlow runs anything
    kd_precision.check(precision)
    if schedule not in teacher_module.SCHEDULES:
        raise RunError(
            f"Unknown schedule {schedule!r}: choose one of {', '.join(teacher_module.SCHEDULES)}."
        )
    # Read first: a bad schedule file should fail before any data loads.
    pba_schedule = None if policy is None else pba.as_schedule(policy)
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    if model not in kd_models.names():
        raise RunError(f"Unknown model {model!r}: choose one of {', '.join(kd_models.names())}.")
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    _check_data(bundle, batch_size)
    out = pathlib.Path(out or default_out("teacher", model, dataset).with_suffix(".keras"))
    if out.suffix != ".keras":
        raise RunError(f"--out must end in .keras, got {out}.")
    augment = None
    if pba_schedule is not None:
        if len(bundle.input_shape) != 3:
            raise RunError(
                f"--policy applies image ops, but {dataset} is not image data: drop --policy."
            )
        augment = pba.PBAAugment(pba_schedule, seed=None)
    elif schedule == "crd" and dataset != kd_data.DIGITS and len(bundle.input_shape) == 3:
        augment = kd_data.standard_augmentation()
    if epochs is None:
        epochs = 240 if schedule == "crd" else 30
    if learning_rate is None:
        learning_rate = teacher_module.LEARNING_RATES[schedule]
    with strategy.scope(), kd_precision.policy(precision):
        teacher = kd_models.get(
            model, bundle.input_shape, bundle.num_classes, **bundle.model_kwargs
        )
    teacher = train_teacher(
        teacher, bundle.train, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, validation_data=bundle.test, seed=seed,
        verbose=verbose, augment=augment, schedule=schedule, strategy=strategy,
    )
    if precision != "float32":
        teacher = cast_model(teacher, "float32")
    card = {
        "model": model,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "schedule": schedule,
        "precision": precision,
        "seed": seed,
        "parameters": int(teacher.count_params()),
        "train_seconds": time.perf_counter() - started,
        "keras_version": keras.__version__,
        "command": command,
        "policy": None if policy is None else str(policy),
    }
    quality = teacher_quality(*predict_split(teacher, bundle.test))
    card["test_accuracy"] = quality["accuracy"]
    card["test_chance_accuracy"] = quality["chance"]
    card["test_kappa"] = quality["kappa"]
    if bundle.test_shifted is not None:
        card["test_accuracy_shifted"] = evaluate(teacher, bundle.test_shifted)
    if kd_strategy.is_chief(strategy):  # the other workers trained the same teacher alongside
        out.parent.mkdir(parents=True, exist_ok=True)
        teacher.save(out)
        _write_json(out.with_suffix(".json"), card)
    if quality["kappa"] < WEAK_TEACHER_KAPPA and not allow_weak_teacher:
        raise RunError(weak_teacher_message(
            quality, f"the {dataset} test data",
            subject=f"{out} and its card are written, but the teacher",
        ))
    return card


def train_vae_job(
    dataset=kd_data.DIGITS,
    epochs=100,
    batch_size=64,
    latent_dim=16,
    filters=16,
    beta=1.0,
    learning_rate=1e-3,
    seed=0,
    out="saved_models/digits_vae.keras",
    data_dir=None,
    download="auto",
    command=None,
    verbose="auto",
):
    """Train a VAE on a data set's training images, save it with a card; return the card.

    What `kd-keras train-vae` runs: load the data, train
    `kd_keras.models.VAE` with `kd_keras.models.train_vae`, score the mean
    reconstructions of the test images (binary cross-entropy per image and
    pixel MSE, deterministic), and write `out` plus its card `<out>.json`.
    The model is saved without its optimiser: it is used frozen, and that
    keeps the file small.

    Args:
        dataset: `"digits"` (offline) or `"tfds:NAME"` (images in `[0, 1]`
            with height and width divisible by 4).
        epochs: training epochs.
        batch_size: batch size.
        latent_dim: size of the latent code.
        filters: filters of the VAE's first convolution.
        beta: weight of the KL term.
        learning_rate: Adam's learning rate.
        seed: seed of everything random.
        out: path of the `.keras` file to write.
        data_dir: TFDS data directory.
        download: TFDS download policy (see `kd_keras.data.load_tfds`).
        command: the command line to record in the card (how to rebuild it).
        verbose: Keras `fit` verbosity.

    Returns:
        The card dictionary.

    Example:
    ```python
    card = kd_keras.run.train_vae_job(epochs=100, seed=0, out="vae.keras")
    ```
    """
    out = pathlib.Path(out)
    if out.suffix != ".keras":
        raise RunError(f"--out must end in .keras, got {out}.")
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    started = time.perf_counter()
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    _check_data(bundle, batch_size)
    train_images = _vae_images(bundle, "train")
    test_images = _vae_images(bundle, "test")
    keras.utils.set_random_seed(seed)
    vae = kd_models.VAE(bundle.input_shape, latent_dim=latent_dim, filters=filters, beta=beta)
    kd_models.train_vae(
        vae, train_images, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, seed=seed, verbose=verbose,
    )
    scores = kd_models.vae.evaluate_vae(vae, test_images)
    card = {
        "model": "vae",
        "dataset": dataset,
        "latent_dim": latent_dim,
        "filters": filters,
        "beta": beta,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "parameters": int(vae.count_params()),
        "test_bce_per_image": scores["bce"],
        "test_mse": scores["mse"],
        "train_seconds": time.perf_counter() - started,
        "keras_version": keras.__version__,
        "command": command,
    }
    # An uncompiled copy carries no optimiser state (three times the weights).
    shipped = kd_models.VAE.from_config(vae.get_config())
    shipped.set_weights(vae.get_weights())
    out.parent.mkdir(parents=True, exist_ok=True)
    shipped.save(out)
    _write_json(out.with_suffix(".json"), card)
    return card


def _vae_images(bundle, split):
    source = {"train": bundle.train, "test": bundle.test}[split]
    if isinstance(source, tuple):
        return np.asarray(source[0], dtype="float32")
    return np.stack([image for image, _ in source.as_numpy_iterator()]).astype("float32")


def export_job(
    model_path, out, formats, dataset=kd_data.DIGITS, data_dir=None, download="auto",
    safe_mode=True,
):
    """Export a saved student to `formats` with parity checks on real inputs; return the report."""
    _check_writable(pathlib.Path(out), "the export directory")
    student = load_model(model_path, safe_mode=safe_mode)
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    _check_fits(student, bundle, "student", fix="pass the --dataset it was trained on")
    return kd_export.export_student(
        student,
        out,
        formats=formats,
        check_data=bundle.sample("test", 512),
        representative_data=bundle.sample("train", 200),
    )


def search_job(role="teacher", dataset=kd_data.DIGITS, out=None, **settings):
    """Search a role-wise augmentation agent by population-based training; return its summary.

    What `kd-keras search` runs: `kd_keras.search.search` (Ray Tune's PBT,
    the `[search]` extra), which writes the best trial's schedule to
    `out/schedule.json`, its summary to `out/search.json` and the Ray
    experiment to `out/ray/`.

    Args:
        role: `"teacher"` or `"student"`.
        dataset: `"digits"` or `"tfds:NAME"`.
        out: output directory (default: `runs/search-<role>-<dataset>-<time>`).
        **settings: the other arguments of `kd_keras.search.search`.

    Returns:
        The summary dictionary of `search.json` (best validation accuracy,
        schedule path, wall time per trial-epoch, ...).

    Example:
    ```python
    summary = kd_keras.run.search_job("student", population=4, epochs=6, out="runs/agent")
    ```
    """
    from kd_keras import search  # it imports this module

    out = pathlib.Path(out or default_out("search", role, dataset))
    search.search(role=role, dataset=dataset, out=out, **settings)
    return json.loads((out / search.SUMMARY_FILE).read_text())
