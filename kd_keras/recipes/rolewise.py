"""Role-wise KD, the student's stage: KD on the views of the student's PBA agent (Fu et al.).

The two-stage pipeline (METHODS.md §6):

    kd-keras search --role=teacher --out=runs/teacher_agent
    kd-keras train-teacher --policy=runs/teacher_agent/schedule.json --out=teacher.keras
    kd-keras search --role=student --teacher=teacher.keras --out=runs/student_agent
    kd-keras distill --recipe=rolewise --policy=runs/student_agent/schedule.json --teacher=teacher.keras
"""

from kd_keras.recipes import blocks


def rolewise(
    policy=None,
    temperature=4.0,
    augment_seed=None,
    fill_value=0.0,
    cutout=0.5,
    value_range=(0.0, 1.0),
):
    """Vanilla KD on the views of the student's PBA agent, in tf.data.

    `L = 0.1 * CE(y, s(x~)) + 0.9 * KD_4(t(x~), s(x~))` with the CRD recipe
    of `kd`, where `x~` is each training image after the student agent's PBA
    schedule (`kd_keras.augment.pba.PBAAugment`): teacher and student see the
    same view, as in the released code; after the policy (and the data's
    pad-crop-flip) every image loses a square of half its side, as PBA's
    pipeline always cuts one out. A schedule searched over another
    number of epochs is stretched to the run. `policy=None` uses a hand-set
    constant policy, not searched (`kd_keras.augment.pba.HAND_SET_POLICY`).

    The released student stage of role-kd is not Hinton KD (MHGD, RKD and
    SVD feature losses on a pretrained ResNet-18, Adam 1e-3); see the
    README's paper-settings table for why this recipe keeps Hinton KD.

    References:
        Fu et al. Role-Wise Data Augmentation for Knowledge Distillation,
        arXiv:2004.08861 (seed 000); Ho et al. Population Based Augmentation,
        ICML 2019.

    Args:
        policy: the student agent: the path of a schedule JSON (e.g. from
            `kd-keras search --role=student`), a `kd_keras.augment.pba.Schedule`
            or `Policy`, or None for the hand-set policy.
        temperature: softmax temperature of the KD term.
        augment_seed: seed of the augmentation draws (None: from the run's seed).
        fill_value: value of pixels the geometric ops and Cutout bring in,
            in the inputs' units.
        cutout: the square cut out of every image after the policy, as a
            fraction of the side: PBA's 16 px of 32 (role-kd's CIFAR-100
            runs: 0.25); 0 for none.
        value_range: `(low, high)`, the range of the inputs, which the ops
            see mapped onto their `[0, 1]` (e.g. the min and max of
            standardised MNIST-1D; the networks keep the inputs' units).

    Returns:
        The recipe config.

    Example:
    ```python
    config = kd_keras.recipes.rolewise(policy="student_schedule.json")
    ```
    """
    config = blocks.distillation("rolewise", temperature=temperature)
    config["host_augment"] = {
        "class_name": "PBAAugment",
        "policy": policy,
        "seed": augment_seed,
        "fill_value": fill_value,
        "cutout": cutout,
        "value_range": list(value_range),
        # The graph-native map costs tf.data 0.2-0.9 s to instantiate per
        # epoch (benchmarks/pba_pipeline.py): short epochs run it in-process.
        "in_process": True,
    }
    return config
