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

    def optimizer(self, steps_per_epoch, epochs):
        """Return the student's SGD optimiser with the recipe's step decay."""
        boundaries = [
            max(1, int(round(f * epochs * steps_per_epoch)))
            for f in self.decay_fractions
        ]
        values = [
            self.learning_rate * self.decay_factor**i
            for i in range(len(boundaries) + 1)
        ]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        return keras.optimizers.SGD(
            schedule, momentum=self.momentum, weight_decay=self.weight_decay or None
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


_RECIPES = {"kd": kd}


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
