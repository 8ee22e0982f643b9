"""Turn a recipe config into live objects: the Distiller, its optimisers, callbacks, host augmentation.

The only place that instantiates what a config names (and loads a VAE).
"""

import math

import keras

from kd_keras import augment
from kd_keras import callbacks as kd_callbacks
from kd_keras import losses as kd_losses
from kd_keras import optimizers as kd_optimizers
from kd_keras import shipped
from kd_keras.augment import pba
from kd_keras.distiller import Distiller

_AUGMENTERS = {
    name: getattr(augment, name)
    for name in (
        "MixUp",
        "CutMix",
        "CutMixPick",
        "FunctionMatching",
        "LearnedPolicy",
        "SpatialAugmenter",
        "GenerativeAugmenter",
        "BackwardPerturbation",
    )
}
_LOSSES = {
    "TemperatureKL": kd_losses.TemperatureKL,
    "HintDistillation": kd_losses.HintDistillation,
    "LogitsDistillation": keras.distillation.LogitsDistillation,
    "FeatureDistillation": keras.distillation.FeatureDistillation,
}


def distiller(config, teacher, student):
    """Return the `kd_keras.Distiller` a config describes, for these models.

    The recipe's distillation losses come first, then the config's
    `extra_losses` (weights `extra_loss_weights`, 1 each by default), all in
    Keras' sum `total = a * student_loss + (1 - a) * sum_i w_i * L_i`.

    Args:
        config: a recipe config (`kd_keras.recipes.get`).
        teacher: the frozen teacher.
        student: the student.

    Returns:
        An uncompiled `kd_keras.Distiller`.
    """
    losses, weights = distillation_losses(config)
    return Distiller(
        teacher,
        student,
        distillation_losses=losses,
        distillation_loss_weights=weights,
        student_loss_weight=config["student_loss_weight"],
        augmenter=augmenter(config),
        student_forward=config["student_forward"],
    )


def distillation_losses(config):
    """The config's distillation losses, the recipe's and then its extra ones, with their weights.

    A loss is a spec (`{"class_name": ..., **arguments}`, a class of
    `_LOSSES`) or, from `kd_keras.distill(extra_losses=...)`, a loss object,
    used as it is.

    Returns:
        `(losses, weights)`: two lists of the same length.
    """
    extra = config.get("extra_losses") or []
    if not isinstance(extra, (list, tuple)):
        raise ValueError(
            f"extra_losses must be a list of losses, got {extra!r}: e.g. "
            '[{"class_name": "HintDistillation", "teacher_layer_name": "...", '
            '"student_layer_name": "..."}].'
        )
    extra_weights = config.get("extra_loss_weights")
    if extra_weights is None:
        extra_weights = [1.0] * len(extra)
    if not isinstance(extra_weights, (list, tuple)) or len(extra_weights) != len(extra):
        raise ValueError(
            f"extra_loss_weights must give one weight per extra loss ({len(extra)}), got "
            f"{extra_weights!r}; None weighs each by 1."
        )
    losses = [_loss(spec) for spec in [*config["distillation_losses"], *extra]]
    weights = [*config["distillation_loss_weights"], *extra_weights]
    return losses, [float(weight) for weight in weights]


def _loss(spec):
    if isinstance(spec, dict):
        return _instance(spec, _LOSSES, "loss")
    if not callable(getattr(spec, "compute_loss", None)):
        raise ValueError(
            f"{spec!r} is not a distillation loss: give a loss object (with "
            "compute_loss) or a spec {'class_name': ..., ...} of "
            f"{', '.join(sorted(_LOSSES))}."
        )
    return spec


def augmenter(config):
    """Return the in-step augmenter a config names (a `Stack` for stacked recipes), or None."""
    spec = config.get("augmenter")
    return None if spec is None else _augmenter(spec, config)


def _augmenter(spec, config):
    spec = dict(spec)
    name = spec.get("class_name")
    if name == "Stack":
        return augment.Stack([_augmenter(stage, config) for stage in spec["stages"]])
    if name == "GenerativeAugmenter" and isinstance(spec.get("vae"), str):
        spec["vae"] = _load_vae(spec["vae"])
    if spec.get("relabel") is False and "mixed_label_weight" not in spec:
        a = config["student_loss_weight"]
        if not 0 < a < 1:
            raise ValueError(
                "relabel=False weighs the mixed labels by (1 - a) / a with a = "
                f"student_loss_weight, got {a}: use 0 < a < 1."
            )
        spec["mixed_label_weight"] = (1 - a) / a
    return _instance(spec, _AUGMENTERS, "augmenter")


def host_augment(config):
    """Return the tf.data augmentation a config names (e.g. a PBA agent), or None."""
    spec = config.get("host_augment")
    if spec is None:
        return None
    spec = dict(spec)
    if spec.pop("class_name") != "PBAAugment":
        raise ValueError(f"Unknown host augmentation {config['host_augment']!r}: use PBAAugment.")
    policy = spec.pop("policy")
    return pba.PBAAugment(pba.HAND_SET_POLICY if policy is None else policy, **spec)


def compile(distiller, config, steps_per_epoch, epochs):  # noqa: A001 (Keras' verb)
    """Compile `distiller` with the config's optimisers for a run of `epochs` student epochs."""
    distiller.compile(
        optimizer=optimizer(config, steps_per_epoch, epochs),
        augmenter_optimizer=_optimizer(config["augmenter_optimizer"]),
        jit_compile=config["jit_compile"],
    )


def optimizer(config, steps_per_epoch, epochs):
    """The student's optimiser, its rate decayed over the steps the student takes."""
    spec = dict(config["optimizer"])
    phases = config.get("phases") or {}
    student_steps = steps_per_epoch * epochs
    if phases.get("mode") == "steps":
        # Augmenter steps do not advance the student's optimiser.
        cycle = phases["student_steps"] + phases["augmenter_steps"]
        student_steps = student_steps * phases["student_steps"] / cycle
    spec["learning_rate"] = learning_rate_schedule(
        spec["learning_rate"], config["schedule"], student_steps
    )
    return _optimizer(spec)


def learning_rate_schedule(learning_rate, schedule, total_steps):
    """Step decay at fractions of `total_steps`, as PyTorch's per-epoch MultiStepLR.

    The rate drops *at* step `round(f * total_steps)` (Keras' schedule keeps
    its value while `iterations <= boundary`, hence the `- 1`).
    """
    if schedule is None:
        return learning_rate
    if schedule.get("name") != "step":
        raise ValueError(f"Unknown schedule {schedule!r}: use {{'name': 'step', ...}}.")
    boundaries = [max(0, int(round(f * total_steps)) - 1) for f in schedule["decay_fractions"]]
    values = [learning_rate * schedule["decay_factor"] ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def callbacks(config, epochs, host=None):
    """The callbacks a method needs in a run of `epochs` student epochs."""
    found = []
    phases = config.get("phases")
    if phases is not None and phases["mode"] == "steps":
        found.append(
            kd_callbacks.PhaseSchedule(
                student_steps=phases["student_steps"], augmenter_steps=phases["augmenter_steps"]
            )
        )
    elif phases is not None:
        windows = augmenter_windows(phases, epochs)
        if windows:
            found.append(
                kd_callbacks.PhaseSchedule(
                    augmenter_epochs=windows, reset_augmenter_optimizer=phases["reset_optimizer"]
                )
            )
    if host is not None and hasattr(host, "callback"):
        # The run's length stretches a schedule searched over another length.
        found.append(host.callback(fit_epochs(config, epochs)))
    return found


def fit_epochs(config, epochs):
    """Epochs `fit` runs: the student's, plus the augmenter epochs inserted among them."""
    phases = config.get("phases")
    if phases is None or phases["mode"] != "epochs" or not phases["inserted"]:
        return epochs
    return epochs + sum(augmenter_windows(phases, epochs).values())


def augmenter_windows(phases, epochs):
    """`{fit epoch: length}` of the augmenter phases in a run of `epochs` student epochs.

    Phases sit at the same fractions of a run of any length (like the rate's
    decay), at least one epoch long, after at least one student epoch, never
    overlapping; inserted phases push the later student epochs back.
    """
    scale = epochs / phases["full_epochs"]
    windows, end, shift = {}, 1, 0
    for start in sorted(phases["starts"]):
        begin = max(int(math.floor(start * scale + 0.5)), end)
        if begin >= epochs:
            break
        length = max(1, int(math.floor(phases["length"] * scale + 0.5)))
        if phases["inserted"]:
            windows[begin + shift] = length
            shift += length
            end = begin + 1
        else:
            windows[begin] = length
            end = begin + length
    return windows


def _optimizer(spec):
    if spec is None:
        return None
    spec = dict(spec)
    name = spec.pop("class_name")
    if name == "CoupledSGD":
        return kd_optimizers.CoupledSGD(**spec)
    return keras.optimizers.get({"class_name": name, "config": spec})


def _instance(spec, known, kind):
    spec = dict(spec)
    name = spec.pop("class_name", None)
    # A user's own class is named as Keras names it once registered with
    # `keras.saving.register_keras_serializable`: "package>ClassName".
    cls = known.get(name) or (keras.saving.get_registered_object(name) if name else None)
    if cls is None:
        raise ValueError(
            f"Unknown {kind} {name!r} in the recipe config: choose one of "
            f"{', '.join(sorted(known))}, or register your own class with "
            "keras.saving.register_keras_serializable and name it 'package>ClassName'."
        )
    return cls(**spec)


def _load_vae(spec):
    path = shipped.path(f"{spec[len('shipped:') :]}.keras") if spec.startswith("shipped:") else spec
    # Safe mode: a VAE file holds no Python code.
    return keras.saving.load_model(path, safe_mode=True)
