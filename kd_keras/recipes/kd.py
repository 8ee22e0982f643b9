"""Vanilla knowledge distillation (Hinton et al.), the baseline of every table.

Reproduce the CIFAR-100 setting (CRD / RepDistiller, METHODS.md §0):

    kd-keras distill --recipe=kd --dataset=tfds:cifar100 --teacher=resnet56 --student=resnet20
"""

from kd_keras.recipes import blocks


def kd(temperature=4.0):
    """Vanilla KD: `0.1 * CE(y, s(x)) + 0.9 * T^2 KL(p_t^T || p_s^T)`, `T = 4`.

    The CRD CIFAR-100 recipe: PyTorch-style SGD 0.05 (0.01 for MobileNetV2 /
    ShuffleNet students), momentum 0.9, coupled weight decay 5e-4, batch 64,
    240 epochs with the rate divided by 10 at 150/180/210.

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network,
        2015 (arXiv:1503.02531); Tian et al., CRD, ICLR 2020 (the recipe).

    Args:
        temperature: softmax temperature of the KD term.

    Returns:
        The recipe config, a plain dict (see `kd_keras.recipes.blocks`).

    Example:
    ```python
    config = kd_keras.recipes.kd(temperature=2.0)
    ```
    """
    return blocks.distillation("kd", temperature=temperature)
