"""HARD's toy: teach an MLP the CNN teacher's shift invariance from centred digits only.

The student never sees a shifted training digit and is never told about
translations: HARD's augmenter searches, per image, for the warp (rotation,
scale, shear or translation) on which teacher and student disagree most
while the teacher keeps its class, and learns which kind of warp wins:
translations. Plain KD's MLP fails on shifted digits; HARD's recovers a
large part of the teacher's accuracy there (a few minutes on 2 CPU cores;
see benchmarks/hard_toy.py and benchmarks/HARD_STUDY.md).

    PYTHONPATH=. python examples/shift_equivariance.py
    PYTHONPATH=. python examples/shift_equivariance.py --smoke   # 1 epoch: checks that it runs
"""

import sys

import keras
import numpy as np

import kd_keras

EPOCHS = 1 if "--smoke" in sys.argv[1:] else 30

data = kd_keras.data.load_digits()  # centred training digits; test also shifted by [-6, 6] px
teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))

keras.utils.set_random_seed(0)
student = kd_keras.models.get("mlp", data.input_shape, data.num_classes)
distiller = kd_keras.distill(teacher, student, data.train, recipe="hard", epochs=EPOCHS, verbose=2)


def accuracy(model, split):
    x, y = split
    return np.mean(model.predict(x, verbose=0).argmax(-1) == y)


for name, model in (("teacher (CNN)", teacher), ("HARD student (MLP)", student)):
    print(
        f"{name:20s} clean {accuracy(model, data.test):.2%}  "
        f"shifted {accuracy(model, data.test_shifted):.2%}"
    )
groups = distiller.augmenter.group_probabilities().numpy()
print(
    "learned probability of each kind of warp: "
    + ", ".join(
        f"{name} {p:.2f}" for name, p in zip(("rotation", "scale", "shear", "translation"), groups)
    )
)
