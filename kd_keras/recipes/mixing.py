"""KD on teacher-relabelled mixed views (Wang et al.) and function matching (Beyer et al.).

Reproduce the CIFAR-100 settings of Wang et al.'s Table 3 (METHODS.md §2):

    kd-keras distill --recipe=cutmix --dataset=tfds:cifar100 --teacher=resnet56 --student=resnet20
    kd-keras distill --recipe=cutmix_pick --set patient=True --dataset=tfds:cifar100 \\
        --teacher=vgg13 --student=vgg8
"""

from kd_keras.recipes import blocks

# The paper's patient schedule: 4x the 240 epochs (--epoch_factor 4),
# decaying at the same fractions of the run.
PATIENT_EPOCHS = 960


def _mixing(name, augmenter, temperature, patient):
    # With relabel=False, kd_keras.recipes.build weighs the mixed labels by
    # (1 - a) / a: a CE(y, x) + (1 - a) CE(y_mixed, x') + (1 - a) KD(x).
    config = blocks.distillation(name, temperature=temperature, augmenter=augmenter)
    if patient:
        config["epochs"] = PATIENT_EPOCHS
    return config


def mixup(temperature=4.0, alpha=1.0, relabel=True, patient=False, per="batch"):
    """KD on the batch and a teacher-labelled MixUp copy of it ("KD + TL-MixUp").

    `L = 0.1 * CE(y, s(x)) + 0.9 * [KD_4(t(x), s(x)) + KD_4(t(x'), s(x'))]`
    with `x'` the MixUp of `x` (`lam ~ Beta(1, 1)` per batch, no self-pairs)
    and the CRD recipe of `kd`; the student sees `x` and `x'` as two batches
    (separate BatchNorm statistics, as the official code). `relabel=False`
    is the paper's baseline with mixed one-hot labels on `x'` and no KD
    there, `0.1 CE(y, x) + 0.9 CE(y_mixed, x') + 0.9 KD(x)`;
    `patient=True` trains 960 epochs.

    References:
        Wang et al. What Makes a "Good" Data Augmentation in Knowledge
        Distillation - A Statistical Perspective, arXiv:2012.02909 (seed 001).

    Args:
        temperature: softmax temperature of the KD term.
        alpha: MixUp's Beta(alpha, alpha) concentration.
        relabel: True lets the teacher label `x'`; False keeps mixed labels.
        patient: the 960-epoch schedule instead of 240.
        per: `"batch"` (official) or `"sample"`: how often `lam` is drawn.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.mixup(patient=True)
    ```
    """
    augmenter = {"class_name": "MixUp", "alpha": alpha, "relabel": relabel, "per": per}
    return _mixing("mixup", augmenter, temperature, patient)


def cutmix(temperature=4.0, alpha=1.0, relabel=True, patient=False, per="batch"):
    """KD on the batch and a teacher-labelled CutMix copy of it ("KD + TL-CutMix").

    The loss, schedule and options of `mixup`, with `x'` the CutMix of `x`:
    one `lam ~ Beta(1, 1)` and one box per batch with the official side
    `2 * (floor(W * sqrt(1 - lam)) // 2)`, `lam` recomputed from the clipped
    box, no self-pairs.

    References:
        Wang et al. arXiv:2012.02909 (seed 001); Yun et al. CutMix, ICCV 2019.

    Args:
        temperature: softmax temperature of the KD term.
        alpha: CutMix's Beta(alpha, alpha) concentration.
        relabel: True lets the teacher label `x'`; False keeps mixed labels.
        patient: the 960-epoch schedule instead of 240.
        per: `"batch"` (official) or `"sample"`: how often `lam` and a box are drawn.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.cutmix(relabel=False)
    ```
    """
    augmenter = {"class_name": "CutMix", "alpha": alpha, "relabel": relabel, "per": per}
    return _mixing("cutmix", augmenter, temperature, patient)


def cutmix_pick(
    temperature=4.0, n_run=2, criterion="student_entropy", alpha=1.0, patient=False, per="batch"
):
    """KD + CutMixPick: train on the CutMix candidates the student learns most from.

    The loss and schedule of `cutmix`, with `x'` the top-`B` of `n_run = 2`
    CutMix batches scored without gradients by the student's entropy at
    temperature 1 (the criterion of the official code's released commands;
    also `"teacher_entropy"` or `"kl"`). `patient=True` is the paper's best
    setting (960 epochs).

    References:
        Wang et al. arXiv:2012.02909 (seed 001).

    Args:
        temperature: softmax temperature of the KD term and of the `"kl"` score.
        n_run: CutMix batches per step (`n_run * B` candidates).
        criterion: `"student_entropy"`, `"teacher_entropy"` or `"kl"`.
        alpha: CutMix's Beta(alpha, alpha) concentration.
        patient: the 960-epoch schedule instead of 240.
        per: `"batch"` (official) or `"sample"`.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.cutmix_pick(patient=True)
    ```
    """
    augmenter = {
        "class_name": "CutMixPick",
        "n_run": n_run,
        "criterion": criterion,
        "temperature": temperature,
        "alpha": alpha,
        "per": per,
    }
    return _mixing("cutmix_pick", augmenter, temperature, patient)


def funmatch(temperature=1.0, alpha=1.0, flip=True, crop_area=(0.05, 1.0)):
    """Function matching: KD alone on one consistent, aggressive view, for a long time.

    Teacher and student see the same view of each batch: an inception crop
    (area fraction in `crop_area`), a horizontal flip (`flip=False` for
    digits) and mixup with Beta(1, 1). No labels (`a = 0`): `L = KL(p_t || p_s)`
    at temperature 1. "Patient": 1200 epochs (the paper trains thousands), with
    the CRD recipe's optimiser and step decay; the paper itself uses Adam with
    a cosine schedule, so optimiser and schedule are ours.

    References:
        Beyer et al. Knowledge distillation: A good teacher is patient and
        consistent, CVPR 2022.

    Args:
        temperature: softmax temperature of the KD term.
        alpha: mixup's Beta(alpha, alpha) concentration.
        flip: random horizontal flips in the view.
        crop_area: `(min, max)` area fraction of the inception crops.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.funmatch(flip=False)
    ```
    """
    augmenter = {
        "class_name": "FunctionMatching",
        "alpha": alpha,
        "flip": flip,
        "crop_area": list(crop_area),
    }
    config = blocks.distillation(
        "funmatch", temperature=temperature, augmenter=augmenter, student_loss_weight=0.0
    )
    config["epochs"] = 1200
    return config
