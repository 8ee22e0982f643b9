"""Backward-pass KD: KD on gradient-made auxiliary samples (Jafari et al. 2023).

kd-keras distill --recipe=backward
kd-keras distill --recipe=backward --dataset=text-default
"""

from kd_keras.recipes import blocks


def backward(
    temperature=4.0,
    steps=3,
    step_size=None,
    epsilon=None,
    norm="l2",
    fraction=1.0,
    pool_size=0,
    pool_fraction=0.5,
    value_range=(0.0, 1.0),
):
    """KD on the batch and on its teacher-labelled gradient-ascent copy.

    `L = 0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) + KD_4(t(x_k), s(x_k))]`
    with `x_k` made from `x` by `steps = 3` normalised ascent steps on
    `KL(p_t^4 || p_s^4)`, projected to an eps-ball around `x` and to the
    valid inputs (`kd_keras.augment.BackwardPerturbation`); the CRD recipe
    of `kd`. Default radii: l2 1.0 (linf 0.1) for images in [0, 1], l2 0.5
    for token distributions, step size `2.5 * epsilon / steps`. Token-id
    data needs the vocabulary size, which `kd_keras.recipes.build` takes
    from the data.

    References:
        Jafari, Rezagholizadeh, Ghodsi 2023, "Improved knowledge distillation
        by utilizing backward pass knowledge in neural networks" (seed 004);
        the step rule, radii and weights are our formalisation (METHODS.md §5).

    Args:
        temperature: softmax temperature of the KD term and of the ascended KL.
        steps: gradient-ascent steps `k`.
        step_size: length of each normalised step (None: `2.5 * epsilon / steps`).
        epsilon: radius of the ball around `x` (None: the defaults above).
        norm: `"l2"` or `"linf"`.
        fraction: fraction of each batch that is perturbed.
        pool_size: capacity of the pool of auxiliary samples (0: no pool).
        pool_fraction: fraction of the auxiliary samples drawn from the pool.
        value_range: `(low, high)`, the valid inputs the samples are clipped
            to, or None for no clip (standardised inputs such as MNIST-1D).

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.backward(norm="linf")
    ```
    """
    augmenter = {
        "class_name": "BackwardPerturbation",
        "steps": steps,
        "step_size": step_size,
        "epsilon": epsilon,
        "norm": norm,
        "temperature": temperature,
        "fraction": fraction,
        "pool_size": pool_size,
        "pool_fraction": pool_fraction,
        "value_range": None if value_range is None else list(value_range),
        # Set from the data for token ids (the jobs do; kd_keras.distill
        # users pass {"augmenter.vocabulary_size": V}).
        "vocabulary_size": None,
    }
    return blocks.distillation("backward", temperature=temperature, augmenter=augmenter)
