import pytest

from kd_keras import atomic


def test_partial_names_keep_the_suffix_that_chooses_the_format(tmp_path):
    assert atomic.partial_path(tmp_path / "student.keras").name == "student.partial.keras"
    assert atomic.partial_path(tmp_path / "e.weights.h5").name == "e.partial.weights.h5"
    assert atomic.partial_path(tmp_path / "saved_model").name == "saved_model.partial"
    assert atomic.partial_path(tmp_path / "views.png").parent == tmp_path


def test_a_write_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_text(path, "old")
    # A kill mid-write leaves only the temporary, which the next write clears.
    atomic.partial_path(path).write_text("half of a previous attempt")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.replacing(path) as temporary:
            temporary.write_text("half of the new")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    atomic.write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_directories_are_renamed_into_place(tmp_path):
    with atomic.replacing(tmp_path / "saved_model") as temporary:
        temporary.mkdir()
        (temporary / "saved_model.pb").write_bytes(b"graph")
    assert (tmp_path / "saved_model" / "saved_model.pb").read_bytes() == b"graph"
    assert not atomic.partial_path(tmp_path / "saved_model").exists()
    atomic.remove(tmp_path / "saved_model")
    atomic.remove(tmp_path / "absent")
    assert not any(tmp_path.iterdir())
