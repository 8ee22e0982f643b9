"""Where the models shipped in `saved_models/` live, installed or in a checkout."""

import pathlib

DIGITS_TEACHER = "digits_cnn_teacher.keras"
DIGITS_VAE = "digits_vae.keras"
TEXT_TEACHER = "text_default_teacher.keras"
MNIST1D_TEACHER = "mnist1d_cnn_teacher.keras"


def path(filename):
    """Return the path of a shipped file, from the installed package or the checkout.

    Args:
        filename: a file name in `saved_models/`, e.g. `"digits_cnn_teacher.keras"`.

    Returns:
        A `pathlib.Path`; it may not exist (callers report that clearly).

    Example:
    ```python
    teacher_path = kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER)
    ```
    """
    package_dir = pathlib.Path(__file__).resolve().parent
    installed = package_dir / "saved_models" / filename
    if installed.exists():
        return installed
    return package_dir.parent / "saved_models" / filename
