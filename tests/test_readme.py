"""Every ```python snippet of README.md runs as written.

The snippets run in order in one namespace (a snippet may continue the one
before it, as the README says), in a fresh working directory. The only
change made to their text: every `epochs=N` becomes `epochs=1`, so the
whole README runs in a minute. What needs a network or a GPU is stubbed
outside the snippets: the CIFAR-100 snippet reads TFDS mock data
(`tfds.testing.mock_data`) with the download probe answering "reachable",
and finds a `resnet56.keras` teacher built here; on CPU the mirrored
strategy has one replica.
"""

import pathlib
import re

import pytest

import kd_keras

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def shortened(code):
    return re.sub(r"\bepochs=\d+", "epochs=1", code)


def test_the_readme_has_the_snippets_this_test_expects():
    found = snippets()
    assert len(found) == 5, [code.splitlines()[0] for code in found]
    assert "epochs=30" in found[0] and "epochs=30" in found[1] and "epochs=2" in found[2]
    assert "extra_losses=[hint]" in found[3] and "epochs=10" in found[3]
    assert "epochs=240" in found[4]
    assert shortened("fit(x, epochs=30)\nepochs=240") == "fit(x, epochs=1)\nepochs=1"


def test_every_readme_snippet_runs(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kd_keras.data.tfds, "servers_reachable", lambda *args, **kwargs: True)
    kd_keras.models.get("resnet56", (32, 32, 3), 100).save("resnet56.keras")
    namespace = {}
    with tfds.testing.mock_data(num_examples=128):
        for index, code in enumerate(snippets()):
            try:
                exec(compile(shortened(code), f"README.md snippet {index}", "exec"), namespace)
            except Exception as error:  # name the snippet that failed
                pytest.fail(f"README snippet {index} failed: {type(error).__name__}: {error}")
    # What the snippets say they make.
    assert (tmp_path / "export" / "student_int8.tflite").exists()
    assert (tmp_path / "distiller.keras").exists() and (tmp_path / "student").is_dir()
    assert any((tmp_path / "logs").iterdir())
    assert namespace["distiller"].student is namespace["student"]
    assert namespace["student"].output_shape == (None, 100)
