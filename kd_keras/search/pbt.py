"""`kd_keras.search.search`: population-based search of a role-wise augmentation agent on Ray Tune."""

import contextlib
import io
import json
import logging
import os
import pathlib
import tempfile
import time
import warnings

import numpy as np

from kd_keras import data as kd_data
from kd_keras import models as kd_models
from kd_keras import resolve
from kd_keras.augment import pba
from kd_keras.run_directory import default_out
from kd_keras.search.explore import PolicyExplore
from kd_keras.search.policy_log import policy_history
from kd_keras.search.ray_import import import_ray
from kd_keras.search.trainable import POLICY
from kd_keras.search.trainable import ROLES
from kd_keras.search.trainable import VALIDATION_ACCURACY
from kd_keras.search.trainable import TrialSetup
from kd_keras.search.trainable import train_trial

DEFAULT_MODELS = {"teacher": "cnn", "student": "mlp"}
# PBA searched 200 epochs on reduced CIFAR; a digits run is short.
DEFAULT_EPOCHS = 200
EXPERIMENT = "ray"
SCHEDULE_FILE = "schedule.json"
SUMMARY_FILE = "search.json"
SETTINGS_FILE = "settings.json"
# What a resumed search must share with the search it continues: Ray
# restores the population and the scheduler from the experiment, the trials
# get the data and networks of the resuming call.
RESUME_KEYS = (
    "role",
    "dataset",
    "model",
    "model_kwargs",
    "teacher",
    "population",
    "epochs",
    "perturbation_interval",
    "train_size",
    "validation_size",
    "batch_size",
    "seed",
    "initial_policy",
)
INITIAL_POLICIES = ("zeros", "random")


def search(
    role="teacher",
    dataset=kd_data.DIGITS,
    model=None,
    bits=None,
    teacher=None,
    population=16,
    epochs=None,
    perturbation_interval=3,
    train_size=None,
    validation_size=0.2,
    batch_size=64,
    learning_rate=None,
    seed=0,
    out=None,
    resume=False,
    max_failures=3,
    initial_policy="zeros",
    resample_probability=0.2,
    quantile_fraction=0.25,
    model_kwargs=None,
    cpus_per_trial=1,
    num_cpus=None,
    data_dir=None,
    download="auto",
    verbose=0,
    allow_weak_teacher=False,
    callbacks=None,
    **recipe_overrides,
):
    """Search a role-wise augmentation agent (a PBA schedule) by population-based training.

    A population of trials trains the same network, each under its own PBA
    policy, reporting validation accuracy (on data held out from the
    training set, never the test set) after every epoch. Ray Tune's
    `PopulationBasedTraining` runs them asynchronously, as PBA did: every
    `perturbation_interval` epochs a trial in the bottom `quantile_fraction`
    copies the weights, optimiser state and policy of one in the top
    (exploit) and perturbs the policy
    (`PolicyExplore`: resample with p=0.2, else shift by 0-3 levels). Role
    `"teacher"` trains with cross-entropy (stage 1 of role-wise KD); role
    `"student"` distils from the frozen `teacher` with recipe `rolewise`, both
    networks seeing the policy's view (stage 2). The best trial's policy log
    becomes the schedule: `out/schedule.json`; `out/search.json` summarises
    the search (best trial and validation accuracy, trial-epochs, exploits,
    wall time per trial-epoch, every trial's final reward, and whether they were all
    equal, in which case the search could not rank its trials and the schedule is
    arbitrary) and `out/ray/` holds the Ray experiment, from which
    `resume=True` continues an interrupted or failed search with the same
    settings. A crashed trial restarts from its last checkpoint, up to
    `max_failures` times.

    Ray runs locally on `num_cpus` cores unless `RAY_ADDRESS` names a
    cluster (whose nodes then need `out` on shared storage). Needs the
    `[search]` extra: `pip install "kd_keras[search]"`.

    References:
        Fu et al. Role-Wise Data Augmentation for Knowledge Distillation,
        arXiv:2004.08861 (seed 000); Ho et al. Population Based Augmentation,
        ICML 2019; Jaderberg et al. Population Based Training, 2017.

    Args:
        role: `"teacher"` or `"student"`.
        dataset: `"digits"` or `"tfds:NAME"` (images).
        model: zoo name of the network to train (default: `"cnn"` for a
            teacher, `"mlp"` for a student).
        bits: train `model` as a low-bit (DoReFa) network of this many bits,
            e.g. 2 for the paper's student (`kd_keras.models.get(..., bits=)`).
        teacher: role student only: a `.keras` path, `"shipped:digits_cnn"`
            (the default) or a zoo name (trained first).
        population: number of trials.
        epochs: epochs of every trial (default: 30 on digits, else 200).
        perturbation_interval: epochs between exploit/explore steps.
        train_size: train on a fixed seeded subset of this many samples (the
            paper searched on 4,000 of CIFAR's 50,000); None: all the rest.
        validation_size: samples held out from the training data for the
            reward: a fraction in (0, 1) or a count.
        batch_size: batch size.
        learning_rate: role teacher: `kd_keras.train_teacher`'s (default
            1e-3, Adam); role student: overrides the recipe's.
        seed: seed of the split, the initial policies, explore and training.
        out: output directory (default: `runs/search-<role>-<dataset>-<time>`).
        resume: continue the search in `out/ray` (restarting errored
            trials from their checkpoints) instead of starting one.
        max_failures: restarts of a crashed trial before it counts as failed.
        initial_policy: `"zeros"` (PBA: no augmentation at first) or
            `"random"` (a random policy per trial).
        resample_probability: explore's resampling probability.
        quantile_fraction: fraction of the population exploited / exploiting.
        model_kwargs: extra arguments of `kd_keras.models.get`, e.g.
            `{"width": 16}`.
        cpus_per_trial: CPUs (and TensorFlow threads) per trial.
        num_cpus: CPUs of a local Ray (default: all).
        data_dir: TFDS data directory.
        download: TFDS download policy (see `kd_keras.data.load_tfds`).
        verbose: Ray Tune verbosity, 0 (silent: also Ray's own log lines and
            Tune's configuration box) to 3.
        allow_weak_teacher: role student: search with a teacher near chance
            on the validation data (see `kd_keras.resolve.check_teacher`) instead
            of refusing it.
        callbacks: Keras callbacks added to every trial's `fit` (after its
            checkpoint, before its report: one that raises makes Ray restart
            the trial from its last reported epoch). They are pickled to Ray's
            workers, so their classes must be importable there or registered
            with `ray.cloudpickle.register_pickle_by_value`.
        **recipe_overrides: role student: overrides of recipe `rolewise`.

    Returns:
        The best trial's `kd_keras.augment.pba.Schedule`, also saved to
        `out/schedule.json`.

    Example:
    ```python
    schedule = kd_keras.search.search(role="student", population=4, epochs=6,
                                      train_size=1000, out="runs/student_agent")
    ```
    """
    started = time.perf_counter()
    ray, tune = import_ray()
    model_kwargs = dict(model_kwargs or {})
    if bits is not None:
        model_kwargs["bits"] = bits
    model = _check_arguments(
        role,
        model,
        teacher,
        recipe_overrides,
        initial_policy,
        population=population,
        perturbation_interval=perturbation_interval,
        batch_size=batch_size,
        cpus_per_trial=cpus_per_trial,
    )
    bundle = kd_data.load(dataset, data_dir=data_dir, download=download)
    if len(bundle.input_shape) != 3:
        raise resolve.RunError(
            f"{dataset} is not an image data set: PBA policies are image operations."
        )
    if epochs is None:
        epochs = bundle.default_epochs or DEFAULT_EPOCHS
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs}.")
    train, validation = split_train_validation(
        _arrays(bundle.train), train_size, validation_size, seed
    )
    teacher_bytes = None
    overrides = dict(recipe_overrides)
    if role == "student":
        teacher = teacher or bundle.default_teacher
        teacher_bytes = _teacher_bytes(teacher, bundle, validation, seed, allow_weak_teacher)
        if learning_rate is not None:
            overrides["learning_rate"] = learning_rate
    setup = TrialSetup(
        role=role,
        model=model,
        model_kwargs=model_kwargs,
        input_shape=tuple(bundle.input_shape),
        num_classes=int(bundle.num_classes),
        train=train,
        validation=validation,
        epochs=int(epochs),
        batch_size=int(batch_size),
        seed=int(seed),
        learning_rate=None if role == "student" else learning_rate,
        teacher_bytes=teacher_bytes,
        recipe_overrides=overrides,
        threads=int(cpus_per_trial),
        callbacks=list(callbacks or []),
    )
    settings = {
        "role": role,
        "dataset": dataset,
        "model": model,
        "model_kwargs": setup.model_kwargs,
        "teacher": teacher,
        "population": int(population),
        "epochs": int(epochs),
        "perturbation_interval": int(perturbation_interval),
        "train_size": len(train[1]),
        "validation_size": len(validation[1]),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "initial_policy": initial_policy,
        "initial_policies": _initial_policies(initial_policy, population, seed),
    }
    out = pathlib.Path(out or default_out("search", role, dataset)).resolve()
    experiment = out / EXPERIMENT
    restoring = bool(resume) and tune.Tuner.can_restore(str(experiment))
    if experiment.exists() and not restoring:
        raise resolve.RunError(
            f"{experiment} already holds a search: pass resume=True (--resume) to "
            "continue it or choose another out."
        )
    if restoring:
        _check_same_settings(out / SETTINGS_FILE, settings)
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / SETTINGS_FILE, settings)
    started_ray = not ray.is_initialized()
    if started_ray:
        # verbose=0 keeps Ray's own INFO and WARNING lines (a token-auth notice,
        # PBT's "no checkpoint ... Skip exploit") out of the output.
        quiet = {
            "log_to_driver": False,
            "logging_level": logging.ERROR if not verbose else logging.INFO,
        }
        if os.environ.get("RAY_ADDRESS"):
            ray.init(**quiet)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, setup=setup), {"cpu": cpus_per_trial}
        )
        if restoring:
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
        else:
            tuner = _new_tuner(
                tune,
                trainable,
                settings,
                out,
                perturbation_interval,
                quantile_fraction,
                resample_probability,
                max_failures,
                seed,
                verbose,
            )
        epochs_before = epochs_trained(experiment)
        # Tune prints its configuration box and result paths even at verbose=0.
        printed = (
            contextlib.redirect_stdout(io.StringIO()) if not verbose else contextlib.nullcontext()
        )
        with warnings.catch_warnings(), printed:
            # Actor reuse is off on purpose (see _new_tuner).
            warnings.filterwarnings("ignore", "Consider boosting PBT performance")
            results = tuner.fit()
        schedule, summary = _best_schedule(results, experiment, setup.epochs)
        summary["trial_epochs"] = epochs_trained(experiment)
        summary["exploits"] = _exploits(experiment)
    finally:
        if started_ray:
            ray.shutdown()
    schedule.save(out / SCHEDULE_FILE)
    wall_seconds = time.perf_counter() - started
    session_epochs = summary["trial_epochs"] - epochs_before
    summary.update(settings)
    summary.update(
        {
            "schedule": str(out / SCHEDULE_FILE),
            "experiment": str(experiment),
            "resumed": restoring,
            "wall_seconds": wall_seconds,
            "session_trial_epochs": session_epochs,
            "seconds_per_trial_epoch": wall_seconds / session_epochs if session_epochs else None,
        }
    )
    _write_json(out / SUMMARY_FILE, summary)
    return schedule


def _check_arguments(role, model, teacher, recipe_overrides, initial_policy, **counts):
    """The search's own arguments, before any data loads; returns the model's name."""
    if role not in ROLES:
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}.")
    if role == "teacher" and (teacher is not None or recipe_overrides):
        raise ValueError(
            "teacher and recipe overrides are for role 'student': drop them or "
            "search with role='student'."
        )
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value}.")
    if initial_policy not in INITIAL_POLICIES:
        raise ValueError(f"initial_policy must be 'zeros' or 'random', got {initial_policy!r}.")
    model = model or DEFAULT_MODELS[role]
    if model not in kd_models.names():
        raise resolve.RunError(
            f"Unknown model {model!r}: choose one of {', '.join(kd_models.names())}."
        )
    return model


def _teacher_bytes(teacher, bundle, validation, seed, allow_weak_teacher):
    """The role student's frozen teacher, checked on the validation data, as .keras bytes."""
    teacher_model = resolve.resolve_teacher(teacher, bundle, seed, verbose=0)
    # The rewards would all be chance: refuse before a single trial runs.
    resolve.check_teacher(
        teacher_model, validation, "the search's validation data", allow_weak_teacher
    )
    return _keras_bytes(teacher_model)


def _initial_policies(initial_policy, population, seed):
    """Each trial's starting policy as levels: all zeros, or random from `seed`."""
    rng = np.random.default_rng(seed)
    return [
        [
            int(level)
            for level in (
                pba.Policy.zeros() if initial_policy == "zeros" else pba.Policy.random(rng)
            ).flat()
        ]
        for _ in range(int(population))
    ]


def split_train_validation(data, train_size=None, validation_size=0.2, seed=0):
    """Hold out a validation set from training data, then keep a fixed subset to train on.

    The reward of the search is accuracy on the held-out part, never on the
    test set. Both parts are drawn by one seeded permutation, so the same
    seed gives the same split.

    Args:
        data: `(x, y)` arrays.
        train_size: samples to keep for training (None: all the rest).
        validation_size: a fraction in (0, 1) or a count of samples.
        seed: seed of the permutation.

    Returns:
        `((x_train, y_train), (x_validation, y_validation))`.

    Example:
    ```python
    train, validation = kd_keras.search.split_train_validation(data.train, 1000)
    ```
    """
    x, y = data
    count = len(y)
    held_out = int(round(validation_size * count)) if validation_size < 1 else int(validation_size)
    if held_out < 1 or held_out >= count:
        raise ValueError(
            f"validation_size={validation_size} holds out {held_out} of {count} "
            "training samples: choose a fraction in (0, 1) or a count in [1, "
            f"{count - 1}]."
        )
    available = count - held_out
    train_size = available if train_size is None else int(train_size)
    if not 1 <= train_size <= available:
        raise ValueError(
            f"train_size={train_size} but only {available} training samples are "
            "left after the validation split: choose at most that."
        )
    order = np.random.default_rng(seed).permutation(count)
    validation, train = order[:held_out], order[held_out : held_out + train_size]
    return (x[train], y[train]), (x[validation], y[validation])


def _arrays(split):
    if isinstance(split, tuple):
        return np.asarray(split[0], dtype="float32"), np.asarray(split[1])
    images, labels = zip(*split.as_numpy_iterator())
    return np.stack(images).astype("float32"), np.asarray(labels)


def _keras_bytes(model):
    # Trials may run on other machines: the teacher travels as bytes.
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "teacher.keras"
        model.save(path)
        return path.read_bytes()


def _new_tuner(
    tune,
    trainable,
    settings,
    out,
    perturbation_interval,
    quantile_fraction,
    resample_probability,
    max_failures,
    seed,
    verbose,
):
    from ray.tune.schedulers import PopulationBasedTraining

    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric=VALIDATION_ACCURACY,
        mode="max",
        perturbation_interval=int(perturbation_interval),
        quantile_fraction=quantile_fraction,
        # The policy is one structured hyperparameter on an integer grid:
        # PBA's own explore replaces Tune's per-key mutations.
        custom_explore_fn=PolicyExplore(resample_probability, seed=seed),
        log_config=True,
    )
    return tune.Tuner(
        trainable,
        param_space={POLICY: tune.grid_search(settings["initial_policies"])},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            num_samples=1,
            # A reused actor must see the paused trial's thread end within
            # Tune's 2 s, or the trial fails ("Trainable runner reuse
            # requires reset_config()"): tf.data's in-flight PBA batches
            # often take longer on a busy machine. A fresh actor per
            # restart costs an import, never a trial.
            reuse_actors=False,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=int(max_failures)),
            verbose=verbose,
        ),
    )


def _exploits(experiment):
    # PBT logs every exploit of every trial, one line each, in pbt_global.txt.
    log = pathlib.Path(experiment) / "pbt_global.txt"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _check_same_settings(path, settings):
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    changed = [key for key in RESUME_KEYS if saved.get(key) != settings[key]]
    if changed:
        raise resolve.RunError(
            f"Cannot resume {path.parent} with other settings ("
            + ", ".join(f"{key} {saved.get(key)!r} -> {settings[key]!r}" for key in changed)
            + "): resume with the settings it was started with."
        )


def _trial_name(trial):
    # Tune would name trials after their config: 60 policy levels per name.
    return f"trial_{trial.trial_id}"


def _best_schedule(results, experiment, epochs):
    if results.errors:
        first = str(results.errors[0]).strip().splitlines()
        raise resolve.RunError(
            f"{len(results.errors)} of {len(results)} trials failed "
            f"({first[-1] if first else 'no message'}): fix the cause and rerun with "
            "resume=True (--resume) to continue from the checkpoints."
        )
    if results.num_terminated < len(results):
        raise resolve.RunError(
            f"The search stopped with {len(results) - results.num_terminated} of "
            f"{len(results)} trials unfinished: rerun with resume=True (--resume) to "
            "finish them."
        )
    # A trial that exploited an already finished one ends without training
    # and keeps that trial's last result, its id and reward included (its
    # weights are that trial's too): the best is chosen among results in their
    # own trial's directory, so its config is the best trial's own. Ties go to
    # the first trial by id, so a resumed search (whose results Ray lists in
    # another order) names the same best trial.
    own = [
        result
        for result in results
        if pathlib.Path(result.path).name == f"trial_{result.metrics['trial_id']}"
    ]
    best = max(
        sorted(own or list(results), key=lambda result: result.metrics["trial_id"]),
        key=lambda result: result.metrics[VALIDATION_ACCURACY],
    )
    trial_id = best.metrics["trial_id"]
    history = policy_history(experiment, trial_id, best.config[POLICY], epochs)
    summary = {
        "best_trial": trial_id,
        "best_validation_accuracy": float(best.metrics[VALIDATION_ACCURACY]),
        "policy_history": [[epoch, policy] for epoch, policy in history],
        **reward_summary([result.metrics[VALIDATION_ACCURACY] for result in results]),
    }
    return pba.Schedule.from_history(history, epochs=epochs), summary


def reward_summary(rewards):
    """Summarise the trials' final rewards: sorted, and whether they are all equal.

    Equal rewards (e.g. every trial at chance) mean the search could not
    rank its trials, so its best schedule is an arbitrary one.

    Args:
        rewards: each trial's final validation accuracy.

    Returns:
        `{"final_rewards": sorted floats, "rewards_all_equal": bool}`.

    Example:
    ```python
    kd_keras.search.pbt.reward_summary([0.119, 0.119])["rewards_all_equal"]  # True
    ```
    """
    rewards = sorted(float(reward) for reward in rewards)
    return {
        "final_rewards": rewards,
        "rewards_all_equal": len(rewards) > 1 and rewards[0] == rewards[-1],
    }


def epochs_trained(experiment):
    """Return how many epochs the trials of a search experiment have trained, all told.

    Every epoch a trial trains ends in a report with a checkpoint, which
    its worker writes straight to the experiment directory as one
    `checkpoint_NNNNNN` folder (and all are kept), so the folders count the
    work, across restarts, exploits and resumed sessions. (Tune's
    `progress.csv` files are no count: the driver rewrites them from stale
    copies when PBT restores a trial.)

    Args:
        experiment: the Ray Tune experiment directory (`out/ray`).

    Returns:
        The number of trial-epochs, 0 for a missing directory.

    Example:
    ```python
    kd_keras.search.epochs_trained("runs/student_agent/ray")
    ```
    """
    return len(list(pathlib.Path(experiment).glob("*/checkpoint_*")))


def _write_json(path, content):
    # Written to a temporary name and renamed, so a reader never sees half a file.
    temporary = pathlib.Path(f"{path}.partial")
    temporary.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
