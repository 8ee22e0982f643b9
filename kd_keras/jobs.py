"""The jobs behind the `kd-keras` command: a distillation run, a teacher, a VAE, an export, a search.

Each job resolves its config, data and models by name, trains, evaluates,
exports and writes a run directory (`kd_keras.run_directory`). A
distillation run checkpoints every epoch: interrupted (Ctrl-C, SIGTERM,
SIGKILL) or stopped by a numerical fault, it keeps its directory, and the
same command resumes it.
"""

import json
import pathlib
import shutil
import tempfile
import time

import keras
import numpy as np

from kd_keras import atomic
from kd_keras import callbacks as kd_callbacks
from kd_keras import data as kd_data
from kd_keras import export as kd_export
from kd_keras import models as kd_models
from kd_keras import precision as kd_precision
from kd_keras import recipes
from kd_keras import strategy as kd_strategy
from kd_keras import teacher as teacher_module
from kd_keras.augment import pba
from kd_keras.callbacks import PolicyTrajectory
from kd_keras.callbacks import backup as kd_backup
from kd_keras.callbacks import faults
from kd_keras.data import text as kd_text
from kd_keras.distill import distill
from kd_keras.models.cast import cast_model
from kd_keras.recipes import build
from kd_keras.resolve import WEAK_TEACHER_KAPPA
from kd_keras.resolve import RunError
from kd_keras.resolve import check_fits
from kd_keras.resolve import check_teacher
from kd_keras.resolve import evaluate
from kd_keras.resolve import load_model
from kd_keras.resolve import predict_split
from kd_keras.resolve import resolve_teacher
from kd_keras.resolve import teacher_quality
from kd_keras.resolve import weak_teacher_message
from kd_keras.run_directory import BACKUP_DIR
from kd_keras.run_directory import DEFAULT_RUNS
from kd_keras.run_directory import TEACHER_FILE
from kd_keras.run_directory import check_unfinished
from kd_keras.run_directory import check_writable
from kd_keras.run_directory import default_out
from kd_keras.run_directory import find_unfinished
from kd_keras.run_directory import run_directory
from kd_keras.run_directory import run_prefix
from kd_keras.run_directory import write_json
from kd_keras.teacher import train_teacher

# A run's checkpoints: at most one per this many seconds (plus the first and
# the last epoch), so sub-second epochs do not spend most of their time saving.
BACKUP_INTERVAL_SECONDS = 10.0


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
    `kd_keras.callbacks.faults.NumericalFault`) continues from the last checkpoint and
    trains the steps an uninterrupted run would. An interruption raises
    `Interrupted` (a `KeyboardInterrupt`) naming the directory and its last
    checkpoint. `metrics.json` marks a finished run, which is never
    overwritten.

    Args:
        recipe: recipe name.
        dataset: a name of `kd_keras.data.names()` (`"digits"`,
            `"mnist1d"`, `"text-default"`) or `"tfds:NAME"`.
        teacher: `"shipped:NAME"`, a `.keras` path or a zoo name (trained
            first); None: the data set's `default_teacher` (e.g.
            `"shipped:digits_cnn"` on digits). A teacher given is used as
            given, and refused if it does not fit the data.
        student: a zoo name; None: the data set's `default_student`.
        epochs: epochs (default: the data set's `default_epochs`, e.g. 30
            on digits, else the recipe's).
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
    metrics = kd_keras.jobs.distill_job(epochs=5, out="runs/try")
    ```
    """
    started = time.perf_counter()
    # First of all: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = kd_strategy.get(strategy)
    kd_precision.check(precision, teacher_precision)
    _check_export_formats(export_formats)
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    if out is not None:
        check_writable(pathlib.Path(out))
    # The recipe's settings and files (a policy schedule) are checked before
    # any data loads.
    build.host_augment(recipes.get(recipe, overrides, teacher=zoo_name(teacher), student=student))
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    teacher = teacher or bundle.default_teacher
    if teacher is None:
        raise RunError(
            f"{dataset} has no default teacher: pass --teacher (a .keras file, or a "
            f"zoo name to train first, e.g. resnet56)."
        )
    student = student or bundle.default_student
    if student not in kd_models.names():
        raise RunError(
            f"Unknown student {student!r}: choose one of {', '.join(kd_models.names())}."
        )
    config = resolve_config(recipe, overrides, teacher, student, bundle)
    epochs = int(epochs or bundle.default_epochs or config["epochs"])
    batch_size = int(batch_size or config["batch_size"])
    _check_data(bundle, batch_size)
    signature = _signature(
        recipe=recipe,
        dataset=dataset,
        teacher=teacher,
        student=student,
        student_bits=student_bits,
        precision=precision,
        teacher_precision=teacher_precision,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        # A run stopped by a NaN may resume from its last checkpoint at a lower rate.
        overrides={
            k: v
            for k, v in overrides.items()
            if k not in ("learning_rate", "optimizer.learning_rate")
        },
    )
    out = _distill_out(out, strategy, recipe, dataset, signature)
    check_unfinished(out, signature)
    trained_teacher = out / TEACHER_FILE
    reuse_teacher = teacher in kd_models.names() and trained_teacher.exists()
    with strategy.scope():
        teacher_model = resolve_teacher(
            str(trained_teacher) if reuse_teacher else teacher,
            bundle,
            seed,
            epochs=teacher_epochs,
            verbose=verbose,
            safe_mode=safe_mode,
        )
    check_teacher(teacher_model, bundle.test, f"the {dataset} test data", allow_weak_teacher)
    # Before anything draws: the student's initial weights come from this seed.
    keras.utils.set_random_seed(seed)
    with strategy.scope(), kd_precision.policy(precision):
        student_model = kd_models.get(
            student,
            bundle.input_shape,
            bundle.num_classes,
            bits=student_bits,
            **bundle.model_kwargs,
        )
    with run_directory(out, signature):
        if teacher in kd_models.names() and not reuse_teacher:
            # A resumed run must not train (and get) another teacher.
            with atomic.replacing(trained_teacher) as temporary:
                teacher_model.save(temporary)
        write_json(out / "config.json", json.loads(recipes.to_json(config)))
        backup = kd_backup.Backup(
            out / BACKUP_DIR,
            signature=signature,
            delete_checkpoint=False,
            min_interval_seconds=BACKUP_INTERVAL_SECONDS,
        )
        callbacks, snapshots, collapse = _watchers(config, bundle, out, epochs)
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
            data_augmentation=bundle.augmentation,
            teacher_cache=teacher_cache,
        )
        if snapshots is not None:
            snapshots.save_png(out / "views.png")
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
            "train_seconds": time.perf_counter() - started,
        }
        if collapse is not None:
            metrics["augmenter_collapsed_epochs"] = collapse.collapsed_epochs
        metrics["exports"] = kd_export.export_student(
            # Mixed precision is for training: ship float32.
            cast_model(distiller.student, "float32")
            if precision != "float32"
            else distiller.student,
            out,
            formats=export_formats,
            check_data=bundle.sample("test", 512),
            representative_data=bundle.sample("train", 200),
            # Left by an attempt that stopped while exporting this same run.
            overwrite=True,
        )
        if getattr(bundle, "tokenizer", None) is not None:
            # The ids mean nothing without it: serve the student on strings
            # with kd_keras.data.text.serving_model(load_tokenizer(...), ...).
            kd_text.save_vocabulary(bundle.tokenizer, out / "vocabulary.txt")
        metrics["wall_seconds"] = time.perf_counter() - started
        write_json(out / "metrics.json", metrics)
        atomic.remove(out / BACKUP_DIR)
    if not kd_strategy.is_chief(strategy):
        shutil.rmtree(out.parent, ignore_errors=True)
    metrics["out"] = str(out) if kd_strategy.is_chief(strategy) else None
    return metrics


def _distill_out(out, strategy, recipe, dataset, signature):
    """The run directory: `out`, or the same command's latest unfinished run, or a new one."""
    if not kd_strategy.is_chief(strategy):
        # Every worker trains; only the chief keeps a run directory.
        return pathlib.Path(tempfile.mkdtemp(prefix="kd-keras-worker-")) / "run"
    if out is None and not kd_strategy.is_multi_worker(strategy):
        # The same command without --out continues its latest unfinished run
        # (multi-worker runs do not resume: the other workers start afresh).
        out = find_unfinished(DEFAULT_RUNS / run_prefix("distill", recipe, dataset), signature)
        if out is not None:
            epoch = (kd_backup.read_checkpoint(out / BACKUP_DIR) or {}).get("epoch", 0)
            print(
                f"Resuming the unfinished run {out} of the same command, from the end of "
                f"epoch {epoch} (--out=DIR starts a new run elsewhere)."
            )
    return pathlib.Path(out or default_out("distill", recipe, dataset))


def _watchers(config, bundle, out, epochs):
    """Callbacks that show a run: TensorBoard, views of its augmenter, a learned policy.

    Returns:
        `(callbacks, snapshots, collapse)`: the list, the `ViewSnapshots`
        whose last grid becomes `views.png` (or None) and the
        `CollapseMonitor` (or None).
    """
    callbacks = [kd_callbacks.TensorBoard(str(out / "logs"))]
    snapshots = collapse = None
    images = len(bundle.input_shape) == 3
    host = build.host_augment(config)
    every = max(1, epochs // 10)
    if images and config["augmenter"] is not None:
        # People want to see what the augmenter makes: a grid of original
        # vs augmented test images in TensorBoard, the last one as a PNG.
        snapshots = kd_callbacks.ViewSnapshots(out / "logs", bundle.sample("test", 8), every=every)
        collapse = faults.CollapseMonitor(bundle.sample("test", 32), every=every)
        callbacks += [snapshots, collapse]
    elif images and host is not None:
        # A policy applied on the host (rolewise's PBA schedule): the same
        # grid, of what the input pipeline makes of the test images.
        snapshots = kd_callbacks.ViewSnapshots(
            out / "logs",
            bundle.sample("test", 8),
            every=every,
            augment=host.augment_batch,
        )
        callbacks.append(snapshots)
    if (config["augmenter"] or {}).get("class_name") == "LearnedPolicy":
        # A learned policy's magnitudes and probabilities, epoch by epoch.
        callbacks.append(PolicyTrajectory(out))
    if host is not None:
        # The student agent's PBA schedule, beside the student it trained.
        host.schedule.save(out / "pba_schedule.json")
    return callbacks, snapshots, collapse


def _check_export_formats(formats):
    unknown = sorted(set(formats) - set(kd_export.FORMATS))
    if unknown:
        raise RunError(
            f"Unknown export format {', '.join(unknown)}: choose from "
            f"{', '.join(kd_export.FORMATS)}."
        )


def resolve_config(recipe, overrides, teacher, student, bundle):
    """The recipe config of a job: its options, the pair's settings, the data's vocabulary.

    Args:
        recipe: a recipe name.
        overrides: recipe options and config settings (see `kd_keras.recipes.get`).
        teacher: the teacher's spec; a zoo name, or a `.keras` file whose
            card (`train-teacher`'s JSON beside it) names its zoo model,
            picks per-pair settings.
        student: the student's zoo name.
        bundle: the `kd_keras.data.DataBundle` it runs on.

    Returns:
        The config dict.
    """
    config = recipes.get(recipe, overrides, teacher=zoo_name(teacher), student=student)
    augmenter = config["augmenter"]
    if augmenter and "vocabulary_size" in augmenter and augmenter["vocabulary_size"] is None:
        # An augmenter that one-hots token ids needs the vocabulary size,
        # known only once the data is loaded.
        augmenter["vocabulary_size"] = bundle.model_kwargs.get("vocabulary_size")
    return config


def zoo_name(teacher):
    """The zoo name of a teacher spec: itself, or a `.keras` file's card's `model`.

    A teacher trained by `kd-keras train-teacher` is usually passed as its
    file; its card says which zoo model it is, so recipes with per-pair
    settings (TST) find the pair.

    Args:
        teacher: a zoo name, a `shipped:` name or a `.keras` path (or None).

    Returns:
        The zoo name, or `teacher` unchanged when there is none to read.
    """
    if not isinstance(teacher, str) or not teacher.endswith(".keras"):
        return teacher
    card = pathlib.Path(teacher).with_suffix(".json")
    try:
        model = json.loads(card.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return teacher
    return model if model in kd_models.names() else teacher


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
        "agreement": float(np.mean(teacher_logits.argmax(-1) == student_logits.argmax(-1))),
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
    card = kd_keras.jobs.train_teacher_job("cnn", epochs=30, out="teacher.keras")
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
        augment = pba.PBAAugment(pba_schedule, seed=None, in_process=True)
    elif schedule == "crd":
        augment = bundle.augmentation
    if epochs is None:
        epochs = 240 if schedule == "crd" else 30
    if learning_rate is None:
        learning_rate = teacher_module.LEARNING_RATES[schedule]
    with strategy.scope(), kd_precision.policy(precision):
        teacher = kd_models.get(
            model, bundle.input_shape, bundle.num_classes, **bundle.model_kwargs
        )
    teacher = train_teacher(
        teacher,
        bundle.train,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        validation_data=bundle.test,
        seed=seed,
        verbose=verbose,
        augment=augment,
        schedule=schedule,
        strategy=strategy,
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
        write_json(out.with_suffix(".json"), card)
    if quality["kappa"] < WEAK_TEACHER_KAPPA and not allow_weak_teacher:
        raise RunError(
            weak_teacher_message(
                quality,
                f"the {dataset} test data",
                subject=f"{out} and its card are written, but the teacher",
            )
        )
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
    card = kd_keras.jobs.train_vae_job(epochs=100, seed=0, out="vae.keras")
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
        vae,
        train_images,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        verbose=verbose,
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
    write_json(out.with_suffix(".json"), card)
    return card


def _vae_images(bundle, split):
    source = {"train": bundle.train, "test": bundle.test}[split]
    if isinstance(source, tuple):
        return np.asarray(source[0], dtype="float32")
    return np.stack([image for image, _ in source.as_numpy_iterator()]).astype("float32")


def export_job(
    model_path,
    out,
    formats,
    dataset=kd_data.DIGITS,
    data_dir=None,
    download="auto",
    safe_mode=True,
):
    """Export a saved student to `formats` with parity checks on real inputs; return the report."""
    check_writable(pathlib.Path(out), "the export directory")
    student = load_model(model_path, safe_mode=safe_mode)
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    check_fits(student, bundle, "student", fix="pass the --dataset it was trained on")
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
    summary = kd_keras.jobs.search_job("student", population=4, epochs=6, out="runs/agent")
    ```
    """
    from kd_keras import search  # Ray is optional: imported only here

    out = pathlib.Path(out or default_out("search", role, dataset))
    search.search(role=role, dataset=dataset, out=out, **settings)
    return json.loads((out / search.SUMMARY_FILE).read_text())
