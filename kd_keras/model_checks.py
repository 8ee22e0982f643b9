"""Checks that a teacher and a student can be distilled together, with the fix in each error."""

import keras

from kd_keras.models.strip_softmax import ends_in_softmax


def check_models(teacher, student):
    """Raise a ValueError naming the fix when `teacher` and `student` cannot be distilled together."""
    for role, model in (("Teacher", teacher), ("Student", student)):
        if not isinstance(model, keras.Model):
            raise ValueError(f"{role} must be a keras.Model, got {type(model)}")
    if ends_in_softmax(teacher):
        raise ValueError(
            f"The teacher {teacher.name!r} ends in a softmax, but distillation "
            "needs logits: pass kd_keras.models.strip_softmax(teacher)."
        )
    if ends_in_softmax(student):
        raise ValueError(
            f"The student {student.name!r} ends in a softmax, but distillation "
            "needs logits: rebuild its last layer with activation=None."
        )
    teacher_out = model_shape(teacher, "output_shape")
    student_out = model_shape(student, "output_shape")
    if teacher_out and student_out and teacher_out[-1] != student_out[-1]:
        raise ValueError(
            f"The teacher outputs {teacher_out[-1]} classes and the student "
            f"{student_out[-1]}: build the student with num_classes="
            f"{teacher_out[-1]}."
        )
    teacher_in = model_shape(teacher, "input_shape")
    student_in = model_shape(student, "input_shape")
    if teacher_in and student_in and tuple(teacher_in[1:]) != tuple(student_in[1:]):
        raise ValueError(
            f"The teacher takes inputs of shape {tuple(teacher_in[1:])} and the "
            f"student {tuple(student_in[1:])}: build the student with "
            f"input_shape={tuple(teacher_in[1:])}."
        )
    teacher_inputs = getattr(teacher, "inputs", None)
    student_inputs = getattr(student, "inputs", None)
    if teacher_inputs and student_inputs:
        for teacher_input, student_input in zip(teacher_inputs, student_inputs):
            if teacher_input.dtype != student_input.dtype:
                raise ValueError(
                    "Teacher and student input dtypes must match. Teacher: "
                    f"{teacher_input.dtype}, Student: {student_input.dtype}."
                )


def model_shape(model, attribute):
    """`model.input_shape` or `output_shape` when it is one tuple, else None."""
    try:
        shape = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    # Multi-input or multi-output models are checked by the losses instead.
    if isinstance(shape, list) or not isinstance(shape, tuple):
        return None
    return shape
