"""Named recipes: plain functions returning the settings that reproduce a paper.

A recipe says which augmenter, losses, weights, optimiser and schedule a
method uses. `kd_keras.distill(..., recipe="kd", **overrides)` and the
`kd-keras distill --recipe=...` command look recipes up here by name; the
keyword arguments of each recipe function are its documented defaults and the
overrides a user may pass.
"""

import dataclasses
import inspect
from typing import Any, Callable, Optional

import keras

from kd_keras.augment import mixing
from kd_keras.distiller import Distiller
from kd_keras.losses import TemperatureKL

# The CIFAR-100 schedule of CRD / RepDistiller: lr x0.1 at epochs 150, 180 and
# 210 of 240, kept as fractions so shorter runs decay at the same points.
CIFAR_DECAY_FRACTIONS = (150 / 240, 180 / 240, 210 / 240)


@dataclasses.dataclass
class Recipe:
    """The settings of one distillation method, as a recipe function returns them.

    Args:
        name: the recipe's name.
        student_loss_weight: weight of the student's cross-entropy.
        distillation_losses: distillation loss objects.
        distillation_loss_weights: one weight per distillation loss.
        augmenter: a `kd_keras.augment.Augmenter`, or None for plain KD.
        learning_rate: the student optimiser's initial learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        decay_fractions: fractions of the run at which the rate is multiplied
            by `decay_factor`.
        decay_factor: the step decay factor.
        epochs: default number of epochs.
        batch_size: default batch size.
        augmenter_optimizer: factory of the augmenter's optimiser, or None.
        callbacks: factory `() -> list of keras callbacks` the method needs.
        host_augment: optional tf.data augmentation `(image, label) -> pair`.
        jit_compile: passed to `Distiller.compile`.
    """

    name: str
    student_loss_weight: float
    distillation_losses: list
    distillation_loss_weights: list
    augmenter: Any = None
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_fractions: tuple = CIFAR_DECAY_FRACTIONS
    decay_factor: float = 0.1
    epochs: int = 240
    batch_size: int = 64
    augmenter_optimizer: Optional[Callable] = None
    callbacks: Callable = list
    host_augment: Optional[Callable] = None
    jit_compile: Any = "auto"

    def build(self, teacher, student):
        """Return the `kd_keras.Distiller` this recipe trains."""
        return Distiller(
            teacher,
            student,
            augmenter=self.augmenter,
            distillation_losses=self.distillation_losses,
            distillation_loss_weights=self.distillation_loss_weights,
            student_loss_weight=self.student_loss_weight,
        )

    def learning_rate_schedule(self, steps_per_epoch, epochs):
        """Return the step-decay schedule of a run of `epochs` epochs."""
        boundaries = [
            max(1, int(round(f * epochs * steps_per_epoch)))
            for f in self.decay_fractions
        ]
        values = [
            self.learning_rate * self.decay_factor**i
            for i in range(len(boundaries) + 1)
        ]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    def optimizer(self, steps_per_epoch, epochs):
        """Return the student's SGD optimiser with the recipe's step decay."""
        return keras.optimizers.SGD(
            self.learning_rate_schedule(steps_per_epoch, epochs),
            momentum=self.momentum, weight_decay=self.weight_decay or None
        )

    def compile(self, distiller, steps_per_epoch, epochs):
        """Compile `distiller` with this recipe's optimisers."""
        distiller.compile(
            optimizer=self.optimizer(steps_per_epoch, epochs),
            augmenter_optimizer=(
                self.augmenter_optimizer() if self.augmenter_optimizer else None
            ),
            jit_compile=self.jit_compile,
        )


def kd(
    temperature=4.0,
    student_loss_weight=0.1,
    distillation_loss_weight=0.9,
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    epochs=240,
    batch_size=64,
    jit_compile="auto",
):
    """Vanilla knowledge distillation (Hinton et al.), the baseline of every table.

    `L = 0.1 * CE(y, s(x)) + 0.9 * T^2 KL(p_t^T || p_s^T)` with `T = 4`, SGD
    momentum 0.9, learning rate 0.05, batch 64, 240 epochs with the rate
    divided by 10 at 150/180/210 (the CRD CIFAR-100 recipe, METHODS.md §0).

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network,
        2015 (arXiv:1503.02531); Tian et al., CRD, ICLR 2020 (the recipe).

    Args:
        temperature: softmax temperature of the KD term.
        student_loss_weight: weight of the cross-entropy with the labels.
        distillation_loss_weight: weight of the KD term.
        learning_rate: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        epochs: epochs of the full schedule.
        batch_size: batch size.
        jit_compile: XLA for the step (`"auto"`: on GPU/TPU only).

    Returns:
        A `kd_keras.recipes.Recipe`.

    Example:
    ```python
    recipe = kd_keras.recipes.kd(temperature=2.0, epochs=30)
    ```
    """
    return Recipe(
        name="kd",
        student_loss_weight=student_loss_weight,
        distillation_losses=[TemperatureKL(temperature)],
        distillation_loss_weights=[distillation_loss_weight],
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        epochs=epochs,
        batch_size=batch_size,
        jit_compile=jit_compile,
    )


# The paper's patient schedule: 4x the 240 epochs, decaying at the same
# fractions of the run.
PATIENT_EPOCHS = 960


def _mixing_recipe(
    name,
    augmenter,
    temperature,
    student_loss_weight,
    distillation_loss_weight,
    patient,
    epochs,
    learning_rate,
    momentum,
    weight_decay,
    batch_size,
    jit_compile,
):
    if epochs is None:
        epochs = PATIENT_EPOCHS if patient else 240
    if not augmenter.relabel:
        # The no-relabelling baseline, a * CE(y, x) + b * CE(y_mixed, x') +
        # b * KD(x), with a = student_loss_weight and b the per-half KD weight:
        # a weighted label mean with weights 1 and b / a, scaled by a + b, and
        # KD on x alone with weight b.
        per_half = distillation_loss_weight / 2
        augmenter.mixed_label_weight = per_half / student_loss_weight
        student_loss_weight = student_loss_weight + per_half
        distillation_loss_weight = per_half
    return Recipe(
        name=name,
        student_loss_weight=student_loss_weight,
        distillation_losses=[TemperatureKL(temperature)],
        distillation_loss_weights=[distillation_loss_weight],
        augmenter=augmenter,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        epochs=int(epochs),
        batch_size=batch_size,
        jit_compile=jit_compile,
    )


def mixup(
    temperature=4.0,
    student_loss_weight=0.1,
    distillation_loss_weight=1.8,
    alpha=1.0,
    relabel=True,
    patient=False,
    epochs=None,
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=64,
    jit_compile="auto",
):
    """KD on the batch and a teacher-labelled MixUp copy of it ("KD + TL-MixUp").

    `L = 0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) + KD_4(t(x'), s(x'))]`
    with `x'` the MixUp of `x` (lambda ~ Beta(1, 1), no self-pairs) and the
    CRD CIFAR-100 schedule of `kd` (SGD 0.05, batch 64, 240 epochs, rate /10
    at 150/180/210). The Distiller averages the KD term over the `2B`
    samples of `[x, x']`, i.e. `(KD(x) + KD(x')) / 2`, so the paper's 0.9 on
    each half is a weight of 1.8; the cross-entropy sees `x` only (label
    weight 0 on `x'`). `relabel=False` is the paper's baseline with mixed
    one-hot labels on `x'` and no KD there, `0.1 CE(y, x) + 0.9 CE(y_mixed,
    x') + 0.9 KD(x)` (see `kd_keras.augment.MixUp`); `patient=True` trains
    960 epochs, decaying at the same fractions.

    References:
        Wang et al. What Makes a "Good" Data Augmentation in Knowledge
        Distillation - A Statistical Perspective, arXiv:2012.02909 (seed 001).

    Args:
        temperature: softmax temperature of the KD term.
        student_loss_weight: weight of the cross-entropy on the clean half.
        distillation_loss_weight: weight of the KD term averaged over `[x, x']`.
        alpha: MixUp's Beta(alpha, alpha) concentration.
        relabel: True lets the teacher label `x'`; False keeps mixed labels.
        patient: the 960-epoch schedule instead of 240.
        epochs: epochs of the schedule (overrides `patient`).
        learning_rate: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: batch size (of `x`; each step trains on `2B` samples).
        jit_compile: XLA for the step (`"auto"`: on GPU/TPU only).

    Returns:
        A `kd_keras.recipes.Recipe`.

    Example:
    ```python
    recipe = kd_keras.recipes.mixup(patient=True)
    ```
    """
    return _mixing_recipe(
        "mixup",
        mixing.MixUp(alpha=alpha, relabel=relabel),
        temperature,
        student_loss_weight,
        distillation_loss_weight,
        patient,
        epochs,
        learning_rate,
        momentum,
        weight_decay,
        batch_size,
        jit_compile,
    )


def cutmix(
    temperature=4.0,
    student_loss_weight=0.1,
    distillation_loss_weight=1.8,
    alpha=1.0,
    relabel=True,
    patient=False,
    epochs=None,
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=64,
    jit_compile="auto",
):
    """KD on the batch and a teacher-labelled CutMix copy of it ("KD + TL-CutMix").

    `L = 0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) + KD_4(t(x'), s(x'))]`
    with `x'` the CutMix of `x` (lambda ~ Beta(1, 1), box side
    `sqrt(1 - lambda) * size`, lambda recomputed from the clipped box, no
    self-pairs) and the CRD CIFAR-100 schedule (SGD 0.05, batch 64, 240
    epochs, rate /10 at 150/180/210). The KD weight is 1.8 because the
    Distiller averages KD over the `2B` samples of `[x, x']`.
    `relabel=False` is the paper's "no relabelling" baseline, `0.1 CE(y, x)
    + 0.9 CE(y_mixed, x') + 0.9 KD(x)` (see `kd_keras.augment.CutMix`);
    `patient=True` trains 960 epochs.

    References:
        Wang et al. What Makes a "Good" Data Augmentation in Knowledge
        Distillation - A Statistical Perspective, arXiv:2012.02909 (seed 001);
        Yun et al. CutMix, ICCV 2019.

    Args:
        temperature: softmax temperature of the KD term.
        student_loss_weight: weight of the cross-entropy on the clean half.
        distillation_loss_weight: weight of the KD term averaged over `[x, x']`.
        alpha: CutMix's Beta(alpha, alpha) concentration.
        relabel: True lets the teacher label `x'`; False keeps mixed labels.
        patient: the 960-epoch schedule instead of 240.
        epochs: epochs of the schedule (overrides `patient`).
        learning_rate: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: batch size (of `x`; each step trains on `2B` samples).
        jit_compile: XLA for the step (`"auto"`: on GPU/TPU only).

    Returns:
        A `kd_keras.recipes.Recipe`.

    Example:
    ```python
    recipe = kd_keras.recipes.cutmix(relabel=False)
    ```
    """
    return _mixing_recipe(
        "cutmix",
        mixing.CutMix(alpha=alpha, relabel=relabel),
        temperature,
        student_loss_weight,
        distillation_loss_weight,
        patient,
        epochs,
        learning_rate,
        momentum,
        weight_decay,
        batch_size,
        jit_compile,
    )


def cutmix_pick(
    temperature=4.0,
    student_loss_weight=0.1,
    distillation_loss_weight=1.8,
    n_run=2,
    criterion="kl",
    alpha=1.0,
    patient=False,
    epochs=None,
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=64,
    jit_compile="auto",
):
    """KD + CutMixPick: train on the CutMix candidates the student learns most from.

    The loss and schedule are `cutmix`'s:
    `0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) + KD_4(t(x'), s(x'))]`
    (KD weight 1.8 over the `2B` samples), with `x'` the top-`B` of
    `n_run = 2` CutMix batches scored without gradients by
    `KL(p_t^4 || p_s^4)` (or the teacher's or the student's entropy). The
    teacher runs once per step over `[x, candidates]`; see
    `kd_keras.augment.CutMixPick` for the pass counts. `patient=True` is the
    paper's best setting (960 epochs).

    References:
        Wang et al. What Makes a "Good" Data Augmentation in Knowledge
        Distillation - A Statistical Perspective, arXiv:2012.02909 (seed 001).

    Args:
        temperature: softmax temperature of the KD term and of the KL score.
        student_loss_weight: weight of the cross-entropy on the clean half.
        distillation_loss_weight: weight of the KD term averaged over `[x, x']`.
        n_run: CutMix batches per step (`n_run * B` candidates).
        criterion: `"kl"`, `"teacher_entropy"` or `"student_entropy"`.
        alpha: CutMix's Beta(alpha, alpha) concentration.
        patient: the 960-epoch schedule instead of 240.
        epochs: epochs of the schedule (overrides `patient`).
        learning_rate: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: batch size (of `x`; each step trains on `2B` samples).
        jit_compile: XLA for the step (`"auto"`: on GPU/TPU only).

    Returns:
        A `kd_keras.recipes.Recipe`.

    Example:
    ```python
    recipe = kd_keras.recipes.cutmix_pick(patient=True)
    ```
    """
    return _mixing_recipe(
        "cutmix_pick",
        mixing.CutMixPick(
            n_run=n_run, criterion=criterion, temperature=temperature, alpha=alpha
        ),
        temperature,
        student_loss_weight,
        distillation_loss_weight,
        patient,
        epochs,
        learning_rate,
        momentum,
        weight_decay,
        batch_size,
        jit_compile,
    )


def funmatch(
    temperature=1.0,
    student_loss_weight=0.0,
    distillation_loss_weight=1.0,
    alpha=1.0,
    flip=True,
    crop_area=(0.05, 1.0),
    epochs=1200,
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=64,
    jit_compile="auto",
):
    """Function matching: KD alone on one consistent, aggressive view, for a long time.

    Teacher and student see the same view of each batch: an inception crop
    (area fraction in `crop_area`), a horizontal flip (`flip=False` for
    digits and other orientation-sensitive data) and mixup with
    Beta(1, 1) (the paper's `p=1`). No labels: `L = KL(p_t || p_s)` at
    temperature 1 (the `T^2` factor is then 1). "Patient": 1200 epochs by
    default (the paper trains thousands, up to 9600 on ImageNet), with the
    step decay of the CIFAR recipe at the same fractions of the run; the
    paper itself uses Adam with a cosine schedule, so optimiser and schedule
    are ours.

    References:
        Beyer et al. Knowledge distillation: A good teacher is patient and
        consistent, CVPR 2022.

    Args:
        temperature: softmax temperature of the KD term.
        student_loss_weight: weight of the cross-entropy (0: KD only).
        distillation_loss_weight: weight of the KD term.
        alpha: mixup's Beta(alpha, alpha) concentration.
        flip: random horizontal flips in the view.
        crop_area: `(min, max)` area fraction of the inception crops.
        epochs: epochs of the schedule.
        learning_rate: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: batch size.
        jit_compile: XLA for the step (`"auto"`: on GPU/TPU only).

    Returns:
        A `kd_keras.recipes.Recipe`.

    Example:
    ```python
    recipe = kd_keras.recipes.funmatch(flip=False, epochs=300)
    ```
    """
    return _mixing_recipe(
        "funmatch",
        mixing.FunctionMatching(alpha=alpha, flip=flip, crop_area=crop_area),
        temperature,
        student_loss_weight,
        distillation_loss_weight,
        False,
        epochs,
        learning_rate,
        momentum,
        weight_decay,
        batch_size,
        jit_compile,
    )


_RECIPES = {
    "kd": kd,
    "mixup": mixup,
    "cutmix": cutmix,
    "cutmix_pick": cutmix_pick,
    "funmatch": funmatch,
}


def names():
    """Return the names of every recipe."""
    return sorted(_RECIPES)


def get(name, **overrides):
    """Build a recipe by name with keyword overrides of its defaults.

    Args:
        name: a name from `kd_keras.recipes.names()`, or a `Recipe` (returned
            unchanged when there are no overrides).
        **overrides: keyword arguments of the recipe function.

    Returns:
        A `kd_keras.recipes.Recipe`.

    Example:
    ```python
    recipe = kd_keras.recipes.get("kd", temperature=2.0)
    ```
    """
    if isinstance(name, Recipe):
        if overrides:
            raise ValueError(
                "Overrides apply to recipe names; change the Recipe object's "
                "fields directly instead."
            )
        return name
    if name not in _RECIPES:
        raise ValueError(f"Unknown recipe {name!r}: choose one of {', '.join(names())}.")
    function = _RECIPES[name]
    accepted = inspect.signature(function).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"Recipe {name!r} has no option {', '.join(unknown)}: its options are "
            f"{', '.join(accepted)}."
        )
    return function(**overrides)
