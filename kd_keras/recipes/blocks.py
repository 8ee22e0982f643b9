"""Blocks every recipe config is built from, defined once.

A recipe config is a plain dict (JSON types, printable and diffable):

    name                       the recipe's name
    student_loss_weight        a, Keras' weight of the labels term
    distillation_losses        [{"class_name": ..., **kwargs}, ...]
    distillation_loss_weights  [w_i, ...]
    extra_losses               distillation losses added to the recipe's ([] by default), e.g.
                               [{"class_name": "HintDistillation", "teacher_layer_name": ...,
                                 "student_layer_name": ...}] (objects too, from kd_keras.distill)
    extra_loss_weights         their weights w_i, or None for 1 each
    augmenter                  {"class_name": ..., **kwargs} or None
    student_forward            "per_view" or "joint" (see kd_keras.Distiller)
    optimizer                  {"class_name": ..., **kwargs} of the student
    small_student_learning_rate  the rate of the small students below, or None
    schedule                   {"name": "step", "decay_fractions": [...], "decay_factor": ...}
    augmenter_optimizer        {"class_name": ..., **kwargs} or None
    phases                     None, {"mode": "steps", ...} or {"mode": "epochs", ...}
    host_augment               {"class_name": ..., **kwargs} (tf.data, before batching) or None
    epochs, batch_size, jit_compile

`kd_keras.recipes.build` turns it into live objects.
"""

# The CIFAR-100 schedule of CRD / RepDistiller: lr x0.1 at epochs 150, 180 and
# 210 of 240, kept as fractions so shorter runs decay at the same points.
CRD_DECAY_FRACTIONS = [150 / 240, 180 / 240, 210 / 240]
CRD_EPOCHS = 240
# RepDistiller's train_student.py and Good-DA-in-KD's option.py train these
# students at lr 0.01 instead of 0.05 (the zoo names of kd_keras.models).
SMALL_STUDENTS = ("mobilenetv2", "shufflev1", "shufflev2")


def crd_optimizer(learning_rate=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False):
    """The student optimiser of CRD / RepDistiller: PyTorch SGD, coupled weight decay."""
    return {
        "class_name": "CoupledSGD",
        "learning_rate": learning_rate,
        "momentum": momentum,
        "nesterov": nesterov,
        "coupled_weight_decay": weight_decay,
    }


def crd_schedule():
    """The CRD CIFAR-100 step decay, as fractions of the run."""
    return {"name": "step", "decay_fractions": list(CRD_DECAY_FRACTIONS), "decay_factor": 0.1}


def hinton_kd(temperature=4.0):
    """Hinton's `T^2 KL(p_t^T || p_s^T)`."""
    return {"class_name": "TemperatureKL", "temperature": temperature}


def distillation(name, temperature=4.0, augmenter=None, student_loss_weight=0.1):
    """The base every recipe extends: Hinton KD with the CRD CIFAR-100 recipe.

    `a = 0.1`, one KD term at `T = 4` with weight 1 (Keras' convention:
    `0.1 CE + 0.9 KD`), CoupledSGD 0.05 with momentum 0.9 and coupled weight
    decay 5e-4 (0.01 for MobileNetV2 / ShuffleNet students), batch 64, 240
    epochs, the rate divided by 10 at 150/180/210.
    """
    return {
        "name": name,
        "student_loss_weight": student_loss_weight,
        "distillation_losses": [hinton_kd(temperature)],
        "distillation_loss_weights": [1.0],
        "extra_losses": [],
        "extra_loss_weights": None,
        "augmenter": augmenter,
        "student_forward": "per_view",
        "optimizer": crd_optimizer(),
        "small_student_learning_rate": 0.01,
        "schedule": crd_schedule(),
        "augmenter_optimizer": None,
        "phases": None,
        "host_augment": None,
        "epochs": CRD_EPOCHS,
        "batch_size": 64,
        "jit_compile": "auto",
    }


def step_phases(student_steps, augmenter_steps):
    """Alternate `student_steps` student steps with `augmenter_steps` augmenter steps."""
    return {"mode": "steps", "student_steps": student_steps, "augmenter_steps": augmenter_steps}


def epoch_phases(starts, length, full_epochs, reset_optimizer=True, inserted=True):
    """Augmenter phases of `length` epochs at the 0-based student epochs `starts`.

    Given for a run of `full_epochs` student epochs and scaled to a run of
    any length. `inserted` phases come on top of the student epochs (TST's
    official code trains the policy before the listed epoch, which then runs
    as usual); otherwise they take those epochs' place.
    """
    return {
        "mode": "epochs",
        "starts": list(starts),
        "length": length,
        "full_epochs": full_epochs,
        "reset_optimizer": reset_optimizer,
        "inserted": inserted,
    }
