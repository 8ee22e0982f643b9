import keras
import numpy as np
import pytest
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras import precision as kd_precision
from kd_keras import shipped

# One step of a mixed-precision student against the same step in float32:
# relative error of the loss and of the weight update (its L2 norm). bfloat16
# keeps 8 significant bits (2^-8 = 0.4%), float16 11 (0.05%); measured on the
# tiny models: loss 1e-4 / 3e-5, update 2e-2 / 5e-4.
# bfloat16 keeps 8 significant bits: its logits are off by up to 0.4%, which
# moves a T=4 KD loss by about 1% (measured 0.8-1.0% on these models).
TOLERANCE = {
    "mixed_bfloat16": {"loss": 1.5e-2, "update": 5e-2},
    "mixed_float16": {"loss": 1e-3, "update": 5e-3},
}


def test_policy_sets_and_restores_the_global_policy():
    assert keras.config.dtype_policy().name == "float32"
    with kd_precision.policy("mixed_bfloat16"):
        student = tiny_student()
        # A saved teacher keeps the float32 its layers were saved with.
        teacher = keras.saving.load_model(shipped.path(shipped.DIGITS_TEACHER))
    assert keras.config.dtype_policy().name == "float32"
    assert kd_precision.computes_in(student, "bfloat16")
    assert not kd_precision.computes_in(teacher, "bfloat16")
    assert all(w.dtype == "float32" for w in student.weights)  # mixed: float32 variables


def test_unknown_precisions_are_refused():
    with pytest.raises(ValueError, match="Unknown precision 'half'"):
        kd_precision.check("half")
    with pytest.raises(ValueError, match="Unknown teacher precision 'int8'"):
        kd_precision.check("float32", "int8")
    with pytest.raises(ValueError, match="Unknown precision"):
        with kd_precision.policy("float64"):
            pass
    assert keras.config.dtype_policy().name == "float32"


def _one_step(recipe, precision, phase="student"):
    keras.utils.set_random_seed(0)
    # hard's learned sampler (the default search has no augmenter phase).
    learned = dict(sampler="network", candidates=1, interpolation="bilinear")
    chosen = kd_keras.recipes.get(recipe, learned if recipe == "hard" else {})
    build = kd_keras.recipes.build
    student = tiny_student()
    if precision != "float32":
        student = kd_keras.models.cast_model(student, precision)
    distiller = build.distiller(chosen, tiny_teacher(), student)
    generator = getattr(distiller.augmenter, "seed_generator", None)
    if generator is not None:  # both precisions draw the same views
        generator.state.assign([7, 0])
    build.compile(distiller, chosen, steps_per_epoch=10, epochs=10)
    networks = distiller.student if phase == "student" else distiller.augmenter
    before = [w.numpy().copy() for w in networks.trainable_weights]
    if phase != "student":
        distiller.phase = phase
    x, y = tiny_batch(count=16)
    logs = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history
    update = [w.numpy() - b for w, b in zip(networks.trainable_weights, before)]
    value = logs["loss" if phase == "student" else "augmenter_objective"][0]
    return distiller, value, update


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize(
    "recipe, phase", [("kd", "student"), ("mixup", "student"), ("hard", "augmenter")]
)
def test_a_mixed_precision_step_matches_float32(recipe, phase, precision):
    _, reference_value, reference_update = _one_step(recipe, "float32", phase)
    distiller, value, update = _one_step(recipe, precision, phase)
    assert abs(value - reference_value) <= TOLERANCE[precision]["loss"] * abs(reference_value)
    error = np.sqrt(sum(((u - r) ** 2).sum() for u, r in zip(update, reference_update)))
    norm = np.sqrt(sum((r**2).sum() for r in reference_update))
    assert norm > 0 and error <= TOLERANCE[precision]["update"] * norm
    # float16 gradients need loss scaling, bfloat16 ones (float32's range) do not.
    scaled = isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    if distiller.augmenter_optimizer is not None:
        assert isinstance(distiller.augmenter_optimizer, keras.optimizers.LossScaleOptimizer) == (
            precision == "mixed_float16"
        )


def test_distill_builds_the_student_in_the_precision_and_keeps_the_callers_models():
    x, y = tiny_batch(count=32)
    teacher, student = tiny_teacher(), tiny_student()
    teacher_weights = [w.numpy().copy() for w in teacher.weights]
    student_weights = [w.numpy().copy() for w in student.weights]
    distiller = kd_keras.distill(
        teacher,
        student,
        (x, y),
        epochs=1,
        batch_size=16,
        verbose=0,
        precision="mixed_bfloat16",
        teacher_precision="bfloat16",
    )
    assert kd_precision.computes_in(distiller.student, "bfloat16")
    assert all(w.dtype == "bfloat16" for w in distiller.teacher.weights)
    assert distiller.student is not student and distiller.teacher is not teacher
    for before, model in ((teacher_weights, teacher), (student_weights, student)):
        for a, b in zip(before, model.weights):
            np.testing.assert_array_equal(a, b.numpy())
    # Built by a function, the student is made in the policy directly.
    built = kd_keras.distill(
        tiny_teacher,
        tiny_student,
        (x, y),
        epochs=1,
        batch_size=16,
        verbose=0,
        precision="mixed_float16",
    )
    assert kd_precision.computes_in(built.student, "float16")
    assert not kd_precision.computes_in(built.teacher, "float16")
    assert keras.config.dtype_policy().name == "float32"
