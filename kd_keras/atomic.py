"""Atomic writes: a file or directory appears whole under its name, or not at all."""

import contextlib
import os
import pathlib
import shutil

PARTIAL = ".partial"


def partial_path(path):
    """Return the temporary name `path` is written under before it is renamed.

    The marker goes before the suffix (`student.keras` ->
    `student.partial.keras`), because Keras and Pillow choose the format
    from the suffix.

    Args:
        path: the final path.

    Returns:
        A `pathlib.Path` in the same directory, so the rename stays atomic.

    Example:
    ```python
    kd_keras.atomic.partial_path("runs/x/student.keras")  # runs/x/student.partial.keras
    ```
    """
    path = pathlib.Path(path)
    name = path.name
    # ".weights.h5" is one suffix to Keras.
    suffix = ".weights.h5" if name.endswith(".weights.h5") else path.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f"{stem}{PARTIAL}{suffix}")


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path to write; on success rename it to `path` in one step.

    Use it for every file a run directory holds, so that a run killed at any
    moment (SIGKILL, power loss) leaves either the previous complete file or
    the new complete file, never half of one. A leftover temporary from an
    earlier kill is removed first; on an exception the temporary is removed
    and `path` is untouched. Files are flushed to disk before the rename.
    A directory can only replace a missing or empty directory.

    Args:
        path: the file or directory to produce.

    Returns:
        A context manager yielding the temporary `pathlib.Path`.

    Example:
    ```python
    with kd_keras.atomic.replacing("runs/x/student.keras") as temporary:
        student.save(temporary)
    ```
    """
    path = pathlib.Path(path)
    temporary = partial_path(path)
    remove(temporary)
    try:
        yield temporary
        if temporary.is_file():
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise


def write_text(path, text):
    """Write `text` to `path` atomically (see `replacing`); return the path.

    Args:
        path: the file to write.
        text: its whole content.

    Returns:
        `pathlib.Path(path)`.

    Example:
    ```python
    kd_keras.atomic.write_text("runs/x/vocabulary.txt", "a\nb\n")
    ```
    """
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return pathlib.Path(path)


def remove(path):
    """Delete a file or a directory tree if it exists."""
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
