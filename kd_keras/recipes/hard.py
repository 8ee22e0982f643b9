"""HARD: learned augmenters that seek teacher-student disagreement (Nix, Burg, Sinz 2023).

The paper's settings were not available; ours were chosen on the digits
shift toy (`benchmarks/hard_toy.py`, validation split of the training
digits; the evidence is in benchmarks/README.md). Reproduce the toy:

    kd-keras distill --recipe=hard
    kd-keras distill --recipe=hard_vae
"""

from kd_keras.recipes import blocks


def _hard(
    name,
    augmenter,
    temperature,
    student_steps,
    augmenter_steps,
    augmenter_learning_rate,
    learnable=True,
):
    config = blocks.distillation(name, temperature=temperature, augmenter=augmenter)
    if learnable:
        config["augmenter_optimizer"] = {
            "class_name": "Adam",
            "learning_rate": augmenter_learning_rate,
        }
        config["phases"] = blocks.step_phases(student_steps, augmenter_steps)
    return config


def hard(
    temperature=4.0,
    student_steps=4,
    augmenter_steps=1,
    augmenter_learning_rate=1e-2,
    lambda_t=0.1,
    augmenter_temperature=1.0,
    image_conditioned=False,
    max_rotation=30.0,
    max_scale=0.2,
    max_shear=0.3,
    max_translation=0.25,
    noise_dim=8,
    sampler="uniform",
    candidates=4,
    refine_steps=0,
    refine_step_size=0.25,
    entropy_weight=0.1,
    initial_std=0.5,
    spread_floor=0.0,
    consistency="kl",
    interpolation="nearest",
    score="teacher",
    groups_per_view=1,
    adaptive_groups=True,
    group_floor=0.25,
    fill_value=0.0,
):
    """HARD with hard affine warps: KD on views where teacher and student disagree.

    A `kd_keras.augment.SpatialAugmenter` turns each batch `x` into views
    `x~` from a generous affine family (rotation up to 30 degrees, zoom
    +-20%, shear 0.3, translation up to a quarter of the side; on one-row
    inputs such as 1-D signals, zoom and translation along the row), never
    told which transformation matters. By default it searches instead of
    training an amortised network: each image gets `candidates=4` random
    draws, each moving one group (rotation, scale, shear or translation);
    teacher and student score them without gradients and the view is the
    draw with the largest `KL(p_t(x~) || p_s(x~))` among those on which the
    teacher keeps the class it gives `x` (`x` itself when none does). The
    groups are drawn with learned probabilities (`adaptive_groups`: a
    quarter spread evenly, the rest following each group's win rate in the
    search), and views are rendered with nearest-neighbour sampling. The
    student minimises `0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) +
    KD_4(t(x~), s(x~))]` with the CRD recipe of `kd`.

    With a learned sampler (`sampler="gaussian"` or `"network"`) the
    augmenter has weights: 4 student steps alternate with 1 augmenter step
    (both networks frozen), minimising `mean[-KL(p_t(x~) || p_s(x~)) +
    lambda_t * C]` with Adam 1e-2. The study behind these defaults is in
    benchmarks/HARD_STUDY.md.

    References:
        Nix, Burg, Sinz 2023, "HARD: Hard Augmentations for Robust
        Distillation" (arXiv:2305.14890); the search, the objective and the
        augmenter are our formalisation (METHODS.md section 3).

    Args:
        temperature: softmax temperature of the student's KD term.
        student_steps: learned samplers: student steps per cycle.
        augmenter_steps: learned samplers: augmenter steps per cycle.
        augmenter_learning_rate: learned samplers: the augmenter's Adam rate.
        lambda_t: weight of the teacher-consistency term of the objective.
        augmenter_temperature: softmax temperature of the objective's divergences.
        image_conditioned: the network sampler reads the image.
        max_rotation: largest rotation, in degrees.
        max_scale: largest relative zoom, in `[0, 1)`.
        max_shear: largest shear factor.
        max_translation: largest translation, as a fraction of the side.
        noise_dim: size of the augmenter's noise vector.
        sampler: `"uniform"` (the search), `"gaussian"` or `"network"`.
        candidates: draws per image the search scores.
        refine_steps: gradient-ascent steps on each kept draw's parameters.
        refine_step_size: their size, as a fraction of each range.
        entropy_weight: the Gaussian sampler's entropy bonus.
        initial_std: the Gaussian sampler's initial spread.
        spread_floor: penalise the batch spread of parameters below it.
        consistency: `"kl"` or `"ce"`, the teacher-consistency term.
        interpolation: `"nearest"` or `"bilinear"` rendering.
        score: `"teacher"` (teacher and student rank draws) or `"student"`.
        groups_per_view: transform groups moved per draw (None: all).
        adaptive_groups: learn the groups' probabilities from the search.
        group_floor: the share of draws spread evenly over the groups.
        fill_value: value of pixels moved in.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.hard(candidates=8)
    ```
    """
    augmenter = {
        "class_name": "SpatialAugmenter",
        "noise_dim": noise_dim,
        "max_rotation": max_rotation,
        "max_scale": max_scale,
        "max_shear": max_shear,
        "max_translation": max_translation,
        "temperature": augmenter_temperature,
        "lambda_t": lambda_t,
        "image_conditioned": image_conditioned,
        "sampler": sampler,
        "candidates": candidates,
        "refine_steps": refine_steps,
        "refine_step_size": refine_step_size,
        "entropy_weight": entropy_weight,
        "initial_std": initial_std,
        "spread_floor": spread_floor,
        "consistency": consistency,
        "interpolation": interpolation,
        "score": score,
        "groups_per_view": groups_per_view,
        "adaptive_groups": adaptive_groups,
        "group_floor": group_floor,
        "fill_value": fill_value,
    }
    return _hard(
        "hard",
        augmenter,
        temperature,
        student_steps,
        augmenter_steps,
        augmenter_learning_rate,
        learnable=sampler != "uniform",
    )


def hard_vae(
    vae="shipped:digits_vae",
    temperature=4.0,
    student_steps=4,
    augmenter_steps=1,
    augmenter_learning_rate=1e-2,
    lambda_t=0.1,
    augmenter_temperature=1.0,
    max_delta=1.0,
    noise_dim=8,
):
    """HARD with a VAE: KD on learned moves in latent space where the networks disagree.

    A `kd_keras.augment.GenerativeAugmenter` renders `x~ = decoder(mu(x) +
    delta)` with a frozen VAE (by default the shipped digits VAE) and a
    learned perturbation `|delta| <= 1` prior standard deviation per latent
    coordinate. The loss, alternation, objective and optimisers are `hard`'s.

    References:
        Nix, Burg, Sinz 2023 (arXiv:2305.14890); the VAE, the perturbation
        network and its bound are our formalisation (METHODS.md section 3).

    Args:
        vae: `"shipped:digits_vae"` or the path of a saved `kd_keras.models.VAE`
            whose input shape is the teacher's (loaded by `kd_keras.recipes.build`).
        temperature: softmax temperature of the student's KD term.
        student_steps: student steps per cycle.
        augmenter_steps: augmenter steps per cycle.
        augmenter_learning_rate: the augmenter's Adam learning rate.
        lambda_t: weight of the teacher-consistency term of the objective.
        augmenter_temperature: softmax temperature of the objective's divergences.
        max_delta: bound of each latent coordinate's perturbation, in prior
            standard deviations.
        noise_dim: size of the augmenter's noise vector.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.hard_vae(vae="my_vae.keras", max_delta=1.5)
    ```
    """
    augmenter = {
        "class_name": "GenerativeAugmenter",
        "vae": vae,
        "noise_dim": noise_dim,
        "max_delta": max_delta,
        "temperature": augmenter_temperature,
        "lambda_t": lambda_t,
    }
    return _hard(
        "hard_vae", augmenter, temperature, student_steps, augmenter_steps, augmenter_learning_rate
    )
