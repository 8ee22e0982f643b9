"""Optimizers with the semantics of the papers' PyTorch code."""

import keras
from keras import ops

from kd_keras import _keras_compat


@keras.saving.register_keras_serializable(package="kd_keras")
class CoupledSGD(keras.optimizers.SGD):
    """SGD as `torch.optim.SGD`: coupled L2 weight decay, PyTorch's momentum buffer.

    The papers' CIFAR recipes (CRD, RepDistiller, Wang et al., TST) train
    with `torch.optim.SGD(lr, momentum=0.9, weight_decay=5e-4)`, which adds
    `weight_decay * w` to the gradient of every parameter it updates (BN
    scales and biases included) *before* the momentum buffer:

        d = g + weight_decay * w
        buf = momentum * buf + d          (buf = d at the first step)
        w = w - lr * (d + momentum * buf if nesterov else buf)

    Keras' `SGD(weight_decay=...)` instead shrinks `w` by `lr * wd * w`
    outside the momentum, about 10x less in steady state at momentum 0.9,
    and folds the learning rate into its velocity, so a step decay of the
    rate acts a step later than PyTorch's. Use this class to reproduce the
    papers' optimisation; Keras' SGD otherwise.

    References:
        PyTorch's `torch.optim.SGD` (dampening 0); Tian et al., CRD, ICLR 2020
        (the recipe).

    Args:
        learning_rate: a float or a `keras.optimizers.schedules` schedule.
        momentum: momentum factor in `[0, 1]`.
        nesterov: Nesterov momentum, as `torch.optim.SGD(nesterov=True)`.
        coupled_weight_decay: the L2 factor added to the gradient (PyTorch's
            `weight_decay`).
        **kwargs: passed to `keras.optimizers.SGD` (not `weight_decay`, the
            decoupled kind).

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:
    ```python
    optimizer = kd_keras.optimizers.CoupledSGD(0.05, momentum=0.9,
                                               coupled_weight_decay=5e-4)
    ```
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        coupled_weight_decay=0.0,
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "CoupledSGD takes coupled_weight_decay (PyTorch's weight_decay), not "
                "Keras' decoupled weight_decay: pass coupled_weight_decay=... instead."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(
            learning_rate=learning_rate, momentum=float(momentum), nesterov=nesterov, **kwargs
        )
        if not coupled_weight_decay >= 0:
            raise ValueError(f"coupled_weight_decay must be >= 0, got {coupled_weight_decay}.")
        self.coupled_weight_decay = float(coupled_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            decay = ops.cast(self.coupled_weight_decay, variable.dtype)
            gradient = ops.add(gradient, ops.multiply(decay, variable))
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(learning_rate, gradient))
            return
        buffer = self.momentums[_keras_compat.variable_index(self, variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        # From a zero buffer the first step gives buf = d, PyTorch's start.
        self.assign(buffer, ops.add(ops.multiply(momentum, buffer), gradient))
        step = ops.add(gradient, ops.multiply(momentum, buffer)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(learning_rate, step))

    def get_config(self):
        return {**super().get_config(), "coupled_weight_decay": self.coupled_weight_decay}
