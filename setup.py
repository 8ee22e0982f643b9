"""Packaging for kd_keras."""

import pathlib
import re

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "kd_keras" / "version.py").read_text()
).group(1)

setup(
    name="kd_keras",
    version=VERSION,
    description=(
        "Knowledge distillation for Keras 3 in which the data the teacher "
        "teaches on is a trainable part of the model."
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The shipped models live in the top-level saved_models/ of the checkout
    # and are installed as kd_keras/saved_models so `pip install .` carries them.
    packages=find_packages(include=["kd_keras", "kd_keras.*"]) + ["kd_keras.saved_models"],
    package_dir={"kd_keras.saved_models": "saved_models"},
    package_data={"kd_keras.saved_models": ["*.keras", "*.json", "*.md"]},
    install_requires=[
        # One TensorFlow distribution: `tensorflow` everywhere (it runs on CPU
        # as it is); the [gpu] extra adds its CUDA wheels (tensorflow[and-cuda])
        # to the same distribution instead of installing a second one.
        "tensorflow>=2.16",
        "keras>=3.12",
        "tensorflow-datasets>=4.9",
        # tfds.load needs it on Python 3.11 but does not declare it.
        "importlib_resources>=5.0",
        "absl-py>=1.0",
        "scikit-learn>=1.2",
        # TF 2.21 no longer pulls TensorBoard in.
        "tensorboard>=2.16",
        "ai-edge-litert>=1.2",
        "numpy>=1.23",
        # The figures (kd_keras.plots) use Pillow's scalable default font (10.1).
        "pillow>=10.1",
        # MNIST-1D (--dataset=mnist1d), generated offline from its seed; it
        # brings matplotlib (a few seconds of install), which its import needs.
        "mnist1d>=0.0.2",
    ],
    extras_require={
        # The search tests need Ray Tune: CI installs it rather than skipping them.
        "test": ["pytest>=7.0", "pytest-xdist>=3.0", "ray[tune]>=2.9", "hypothesis>=6"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        # Population-based search of role-wise augmentation agents (kd_keras.search).
        "search": ["ray[tune]>=2.9"],
    },
    entry_points={"console_scripts": ["kd-keras=kd_keras.cli:run"]},
)
