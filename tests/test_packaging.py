"""Packaging: exactly one TensorFlow distribution, whichever extras are installed."""

import pathlib
import re

SETUP = pathlib.Path(__file__).resolve().parent.parent / "setup.py"


def requirements():
    text = SETUP.read_text()
    return re.findall(r'"((?:tensorflow|tf)[\w\-\[\]]*[^"]*)"', text)


def test_one_tensorflow_distribution_for_every_install():
    found = requirements()
    names = {re.split(r"[<>=;\[ ]", requirement)[0] for requirement in found}
    # tensorflow-datasets and tensorboard are other packages; of TensorFlow
    # itself only `tensorflow` is named (never tensorflow-cpu beside it).
    frameworks = names - {"tensorflow-datasets", "tensorboard"}
    assert frameworks == {"tensorflow"}, found
    assert any(r.startswith("tensorflow[and-cuda]") for r in found), found
