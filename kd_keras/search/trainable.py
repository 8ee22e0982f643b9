"""One trial of the population-based search: train under the trial's policy, report every epoch."""

import dataclasses
import json
import pathlib
import tempfile
import zlib
from typing import Any

import keras
import tensorflow as tf

from kd_keras import models as kd_models
from kd_keras import recipes
from kd_keras import resolve
from kd_keras.augment import pba
from kd_keras.distill import distill
from kd_keras.search.ray_import import import_ray
from kd_keras.teacher import train_teacher

ROLES = ("teacher", "student")
# The trial config's only hyperparameter: the flat policy of `pba.Policy`.
POLICY = "policy"
VALIDATION_ACCURACY = "validation_accuracy"
# The policies a checkpoint's weights were trained under, one per epoch: the
# lineage the PBT policy log describes, kept with the weights themselves.
POLICIES_FILE = "policies.json"


@dataclasses.dataclass
class TrialSetup:
    """What every trial of a search shares, handed to it by `tune.with_parameters`.

    Args:
        role: `"teacher"` (cross-entropy) or `"student"` (KD from `teacher_bytes`).
        model: zoo name of the network the trial trains.
        model_kwargs: extra arguments of `kd_keras.models.get`.
        input_shape: shape of one image.
        num_classes: number of classes.
        train: `(x, y)` arrays the trial trains on.
        validation: `(x, y)` arrays held out from the training data; the reward.
        epochs: epochs of every trial.
        batch_size: batch size.
        seed: base seed; each run of a trial derives its own from it.
        learning_rate: the teacher's learning rate (role teacher; None:
            `kd_keras.train_teacher`'s default).
        teacher_bytes: the frozen teacher's `.keras` file (role student).
        recipe_overrides: overrides of recipe `rolewise` (role student).
        threads: TensorFlow threads per trial.
        callbacks: Keras callbacks added to every trial's `fit`; they run
            after the epoch's backup and before its report, so one that
            raises makes Ray restart the trial from the last reported epoch.
    """

    role: str
    model: str
    model_kwargs: dict
    input_shape: tuple
    num_classes: int
    train: Any
    validation: Any
    epochs: int
    batch_size: int
    seed: int
    learning_rate: float | None = None
    teacher_bytes: bytes | None = None
    recipe_overrides: dict = dataclasses.field(default_factory=dict)
    threads: int = 1
    callbacks: list = dataclasses.field(default_factory=list)


def train_trial(config, setup):
    """Train one trial under `config["policy"]`, reporting validation accuracy each epoch.

    The Ray Tune function trainable of `kd_keras.search.search`. A run starts
    from the trial's checkpoint when it has one (after a crash, or after PBT's
    exploit copied a better trial's), restores weights, optimiser and epoch
    with `keras.callbacks.BackupAndRestore`, and trains to `setup.epochs`
    with the trial's policy applied by `kd_keras.augment.pba.PBAAugment`:
    role teacher with `kd_keras.train_teacher` (cross-entropy), role student
    with `kd_keras.distill` and recipe `rolewise` (KD, teacher frozen, both
    networks seeing the policy's view). After every epoch it reports
    `validation_accuracy` with a checkpoint of the weights, the optimiser,
    the epoch and the policies of the epochs trained so far.

    Args:
        config: the trial's config, `{"policy": flat policy}`.
        setup: a `TrialSetup`.

    Example:
    ```python
    trainable = ray.tune.with_parameters(kd_keras.search.train_trial, setup=setup)
    ```
    """
    _, tune = import_ray()
    _limit_threads(setup.threads)
    flat = [int(level) for level in config[POLICY]]
    schedule = pba.Schedule.constant(pba.Policy.from_flat(flat))
    trial_id = tune.get_context().get_trial_id() or "local"
    with tempfile.TemporaryDirectory() as backup:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(backup)
        policies = _read_policies(backup)
        start = len(policies)
        if start >= setup.epochs:
            # PBT copied a trial that had already finished: nothing to train.
            return
        # A fresh seed per trial and per restart, so a restarted trial draws
        # new shuffles and augmentations instead of replaying epoch 0's.
        seed = (setup.seed + zlib.crc32(f"{trial_id}:{start}".encode())) % 2**31
        network = kd_models.get(
            setup.model, setup.input_shape, setup.num_classes, **setup.model_kwargs
        )
        callbacks = [
            keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False),
            *setup.callbacks,
            _ReportEpoch(setup.validation, backup, policies, flat),
        ]
        if setup.role == "teacher":
            # Short epochs: the in-process map skips tf.data's per-epoch instantiation.
            augment = pba.PBAAugment(schedule, seed=seed, in_process=True)
            train_teacher(
                network,
                setup.train,
                epochs=setup.epochs,
                batch_size=setup.batch_size,
                learning_rate=setup.learning_rate,
                augment=augment,
                seed=seed,
                callbacks=callbacks,
                verbose=0,
            )
        else:
            teacher = _load_teacher(setup.teacher_bytes)
            recipe = recipes.get("rolewise", {"policy": schedule, **setup.recipe_overrides})
            distill(
                teacher,
                network,
                setup.train,
                recipe=recipe,
                epochs=setup.epochs,
                batch_size=setup.batch_size,
                seed=seed,
                callbacks=callbacks,
                verbose=0,
            )


class _ReportEpoch(keras.callbacks.Callback):
    # Runs after BackupAndRestore in the callback list, so the backup it
    # reports already holds this epoch's weights. It scores the model being
    # fit (a Distiller predicts with its student), not the network handed to
    # the training function, which may train a copy.
    def __init__(self, validation, backup, policies, flat):
        super().__init__()
        self.validation = validation
        self.backup = pathlib.Path(backup)
        self.policies = list(policies)
        self.flat = flat

    def on_epoch_end(self, epoch, logs=None):
        _, tune = import_ray()
        self.policies.append(self.flat)
        (self.backup / POLICIES_FILE).write_text(json.dumps(self.policies))
        accuracy = resolve.evaluate(self.model, self.validation)
        metrics = {VALIDATION_ACCURACY: accuracy, "epoch": epoch + 1}
        metrics.update({key: float(value) for key, value in (logs or {}).items()})
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.backup)))


def _read_policies(directory):
    path = pathlib.Path(directory) / POLICIES_FILE
    return json.loads(path.read_text()) if path.exists() else []


def _load_teacher(teacher_bytes):
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "teacher.keras"
        path.write_bytes(teacher_bytes)
        return resolve.load_model(path)


def _limit_threads(threads):
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow already runs in this process (started by code before
        # the trial): its thread pools are fixed now, train with them.
        pass
