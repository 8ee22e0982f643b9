"""TST: distil on views from a learned augmentation policy (Shao et al., IJCAI 2023).

The official code (shaoshitong/TST, folder SDAKD_FOR_BASELINE) sets the
policy phases, the student's optimiser and the KD weight per teacher-student
pair (`configs/*_c100_diversify.yaml`, METHODS.md §4). Reproduce a pair:

    kd-keras distill --recipe=tst --dataset=tfds:cifar100 --teacher=wrn_40_2 --student=wrn_16_2
"""

from kd_keras.augment import ops as image_ops
from kd_keras.recipes import blocks

# Per (teacher, student) zoo names: phase starts (0-based student epochs of
# 240), phase length, student lr, coupled weight decay, clean batch size,
# KD weight. Pairs whose students are not in the zoo are listed too, so the
# table reads as the official configs do.
PAIRS = {
    ("resnet56", "resnet20"): ((30, 90), 1, 0.1, 1e-4, 128, 1.0),
    ("resnet110", "resnet20"): ((30, 90), 1, 0.1, 1e-4, 128, 0.5),
    ("resnet110", "resnet32"): ((30, 90), 30, 0.1, 1e-4, 128, 0.5),
    ("resnet32x4", "resnet8x4"): ((30, 90), 30, 0.1, 1e-4, 128, 1.0),
    ("resnet32x4", "shufflev1"): ((30, 90), 30, 0.02, 1e-4, 64, 1.0),
    ("vgg13", "mobilenetv2"): ((30, 90), 30, 0.1, 1e-4, 128, 1.0),
    ("vgg13", "vgg8"): (tuple(range(32, 213, 30)), 5, 0.1, 1e-4, 128, 1.0),
    ("wrn_40_2", "shufflev1"): (tuple(range(32, 213, 30)), 5, 0.05, 5e-4, 128, 1.0),
    ("wrn_40_2", "wrn_16_2"): ((30, 90), 30, 0.1, 1e-4, 128, 1.0),
    ("wrn_40_2", "wrn_40_1"): ((30, 90), 10, 0.05, 1e-4, 128, 1.0),
    ("wrn_40_4", "wrn_16_2"): ((30, 90), 30, 0.1, 1e-4, 128, 1.0),
    ("wrn_28_10", "wrn_16_2"): ((30, 90), 30, 0.1, 1e-4, 128, 1.0),
}
# Any other pair: the configuration the official README trains by default,
# with our student rate: the official 0.1 kept the digits MLP at chance
# (README, "TST vs the other recipes on digits").
DEFAULT_PAIR = ("wrn_40_2", "wrn_16_2")
UNLISTED_LEARNING_RATE = 0.01


def tst(
    temperature=4.0,
    ops=None,
    num_ops=4,
    gate_temperature=0.05,
    initial_magnitude=0.5,
    initial_probability=0.5,
    fill_value=0.0,
    per="batch",
    directions="one",
    cutout="official",
    value_range=(0.0, 1.0),
    teacher=None,
    student=None,
):
    """TST: KD on `[x, x~]` with `x~` from a policy trained to be hard for the student.

    A `kd_keras.augment.LearnedPolicy` (AutoAugment's 14 ops, `k = 4`,
    relaxed Bernoulli gates at temperature 0.05) makes a view `x~` of every
    batch. Before the listed student epochs the policy trains for whole
    epochs with the student frozen (inserted: the student epochs still all
    run), minimising `mean[-log p_t(y | x~)] + mean[-log(1 - p_s(y | x~) + 1e-8)]`
    with SGD 0.01, momentum 0.9, reset at each phase, no gradient clipping
    (all official); otherwise the student minimises
    `0.5 [CE + w KD_4](x) + 0.5 [CE + w KD_4](x~)` on one batch of `2B`
    (shared BatchNorm statistics, as the official code), with SGD Nesterov,
    momentum 0.9, coupled weight decay and the rate /10 at 150/180/210.
    The pair's official phases, rate, decay, batch and KD weight `w` come
    from `PAIRS` when `teacher` and `student` name a listed pair (the
    `kd-keras` command passes its zoo names), else those of wrn_40_2 ->
    wrn_16_2, the official default (phases at 30 and 90 of 30 epochs each,
    decay 1e-4, 128 + 128 per step, `w = 1`) with our student rate 0.01
    instead of its 0.1. A shorter run places the phases at the same
    fractions of it.

    The ops are exact differentiable implementations (the official code fits
    neural surrogates); as officially, one op set and one gate per op are
    drawn per batch and signed ops go one way (`per="image"`,
    `directions="random"` draw them per image, with a random sign), and
    Cutout is the official box of half to all of each side, one per batch,
    filled with the batch's channel mean (`cutout="magnitude"`: a square
    per image sized by the Cutout magnitude).

    References:
        Shao et al., "Teaching What You Should Teach: A Data-Based
        Distillation Method", IJCAI 2023 (METHODS.md §4).

    Args:
        temperature: softmax temperature of the KD term.
        ops: the op names the policy draws from (default: TST's 14,
            `kd_keras.augment.ops.TST_OPS`). On inputs that are mostly 0,
            such as digits on a black canvas, Invert inflates the input
            norm and can diverge a student at higher rates: drop it
            (README, "TST vs the other recipes on digits").
        num_ops: ops drawn per draw (batch or image).
        gate_temperature: temperature of the relaxed Bernoulli gates.
        initial_magnitude: the policy's prior magnitude(s).
        initial_probability: the policy's prior probability(ies).
        fill_value: value of pixels the geometric ops bring in (and Cutout
            with `cutout="magnitude"`).
        per: `"batch"` (official) or `"image"`, see `LearnedPolicy`.
        directions: `"one"` (official) or `"random"`, see `LearnedPolicy`.
        cutout: `"official"` (one box of half to all of each side per batch,
            filled with the batch mean) or `"magnitude"` (a square per image
            sized by the Cutout magnitude), see `LearnedPolicy`.
        value_range: `(low, high)`, the range of the inputs, which the ops
            see mapped onto their `[0, 1]` (e.g. the min and max of
            standardised MNIST-1D; the networks keep the inputs' units).
        teacher: the teacher's zoo name, to take a pair's official settings.
        student: the student's zoo name.

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.tst(teacher="resnet32x4", student="resnet8x4")
    ```
    """
    if isinstance(ops, str):
        raise ValueError(
            f"ops must be a list of op names, got the string {ops!r}: quote each "
            """name, e.g. --set 'ops=["ShearX", "Rotate"]'."""
        )
    listed = (teacher, student) in PAIRS
    starts, length, learning_rate, weight_decay, batch_size, kd_weight = PAIRS[
        (teacher, student) if listed else DEFAULT_PAIR
    ]
    if not listed:
        learning_rate = UNLISTED_LEARNING_RATE
    augmenter = {
        "class_name": "LearnedPolicy",
        "ops": list(image_ops.TST_OPS if ops is None else ops),
        "num_ops": num_ops,
        "temperature": gate_temperature,
        "initial_magnitude": initial_magnitude,
        "initial_probability": initial_probability,
        "fill_value": fill_value,
        "per": per,
        "directions": directions,
        "cutout": cutout,
        "value_range": list(value_range),
    }
    config = blocks.distillation(
        "tst", temperature=temperature, augmenter=augmenter, student_loss_weight=0.5
    )
    config["distillation_loss_weights"] = [kd_weight]
    config["student_forward"] = "joint"
    config["optimizer"] = blocks.crd_optimizer(
        learning_rate=learning_rate, weight_decay=weight_decay, nesterov=True
    )
    config["small_student_learning_rate"] = None
    config["batch_size"] = batch_size
    config["augmenter_optimizer"] = {"class_name": "SGD", "learning_rate": 0.01, "momentum": 0.9}
    config["phases"] = blocks.epoch_phases(starts, length, blocks.CRD_EPOCHS)
    return config
