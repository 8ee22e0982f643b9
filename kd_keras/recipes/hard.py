"""HARD: learned augmenters that seek teacher-student disagreement (Nix, Burg, Sinz 2023).

The paper's settings were not available; ours were chosen on the digits
shift toy (`benchmarks/hard_toy.py`, validation split of the training
digits; the evidence is in benchmarks/README.md). Reproduce the toy:

    kd-keras distill --recipe=hard
    kd-keras distill --recipe=hard_vae
"""

from kd_keras.recipes import blocks


def _hard(name, augmenter, temperature, student_steps, augmenter_steps, augmenter_learning_rate):
    config = blocks.distillation(name, temperature=temperature, augmenter=augmenter)
    config["augmenter_optimizer"] = {"class_name": "Adam", "learning_rate": augmenter_learning_rate}
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
):
    """HARD with learned affine warps: KD on views where teacher and student disagree.

    A `kd_keras.augment.SpatialAugmenter` warps each batch `x` into `x~`
    (rotation up to 30 degrees, zoom +-20%, shear 0.3, translation up to a
    quarter of the side). 4 student steps alternate with 1 augmenter step.
    Student steps minimise
    `0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) + KD_4(t(x~), s(x~))]`
    with the CRD recipe of `kd` (its rate decays over the student's own
    steps); augmenter steps (both networks frozen) minimise
    `mean[-KL(p_t(x~) || p_s(x~)) + 0.1 * KL(p_t(x) || p_t(x~))]` at
    temperature 1 with Adam 1e-2.

    References:
        Nix, Burg, Sinz 2023, "HARD: Hard Augmentations for Robust
        Distillation" (arXiv:2305.14890); the objective and the augmenter
        are our formalisation (METHODS.md section 3).

    Args:
        temperature: softmax temperature of the student's KD term.
        student_steps: student steps per cycle.
        augmenter_steps: augmenter steps per cycle.
        augmenter_learning_rate: the augmenter's Adam learning rate.
        lambda_t: weight of the teacher-consistency term of the objective.
        augmenter_temperature: softmax temperature of the objective's divergences.
        image_conditioned: let the augmenter read the image, or learn a
            symmetric distribution of warps from noise alone.
        max_rotation: largest rotation, in degrees.
        max_scale: largest relative zoom, in `[0, 1)`.
        max_shear: largest shear factor.
        max_translation: largest translation, as a fraction of the side.
        noise_dim: size of the augmenter's noise vector.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.hard(max_rotation=0.0)
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
    }
    return _hard("hard", augmenter, temperature, student_steps, augmenter_steps,
                 augmenter_learning_rate)


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
    return _hard("hard_vae", augmenter, temperature, student_steps, augmenter_steps,
                 augmenter_learning_rate)
