"""HARD's toy: teach an MLP the CNN teacher's shift invariance from centred digits only.

The student never sees a shifted training digit and is never told about
translations: HARD's augmenter learns warps on which teacher and student
disagree, and those turn out to be shifts. Plain KD's MLP fails on shifted
digits; HARD's recovers part of the teacher's accuracy there (about a
minute on 2 CPU cores; see benchmarks/hard_toy.py for all methods and seeds).

    PYTHONPATH=. python examples/shift_equivariance.py
"""

import keras
import numpy as np

import kd_keras

data = kd_keras.data.load_digits()  # centred training digits; test also shifted by [-6, 6] px
teacher = kd_keras.run.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))

keras.utils.set_random_seed(0)
student = kd_keras.models.get("mlp", data.input_shape, data.num_classes)
distiller = kd_keras.distill(teacher, student, data.train, recipe="hard", epochs=30, verbose=2)


def accuracy(model, split):
    x, y = split
    return np.mean(model.predict(x, verbose=0).argmax(-1) == y)


for name, model in (("teacher (CNN)", teacher), ("HARD student (MLP)", student)):
    print(
        f"{name:20s} clean {accuracy(model, data.test):.2%}  "
        f"shifted {accuracy(model, data.test_shifted):.2%}"
    )
translations = distiller.augmenter.affine_parameters(data.test[0][:256])
moved = np.hypot(translations["translate_x"], translations["translate_y"])
print(f"learned translations: mean {np.mean(moved):.1f} px, max {np.max(moved):.1f} px")
