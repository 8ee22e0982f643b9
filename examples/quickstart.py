"""Distil the shipped digits CNN into an MLP with plain KD, evaluate and export it.

python examples/quickstart.py
python examples/quickstart.py --smoke   # 1 epoch: checks that it runs
"""

import sys

import kd_keras

EPOCHS = 1 if "--smoke" in sys.argv[1:] else 30

data = kd_keras.data.load_digits()  # bundled with scikit-learn: offline
teacher = kd_keras.resolve.load_model(kd_keras.shipped.path("digits_cnn_teacher.keras"))
student = kd_keras.models.get("mlp", data.input_shape, data.num_classes)

distiller = kd_keras.distill(
    teacher, student, data.train, recipe="kd", epochs=EPOCHS, validation_data=data.test, verbose=2
)
print(distiller.evaluate(*data.test, return_dict=True, verbose=0))

report = kd_keras.export.export_student(
    distiller.student,
    "quickstart_export",
    formats=kd_keras.export.FORMATS,
    check_data=data.test[0][:500],
    representative_data=data.train[0][:200],
)
for name, entry in report.items():
    print(f"{name:15s} {entry['bytes'] / 1024:7.1f} KiB  agreement {entry['agreement']:.4f}")
