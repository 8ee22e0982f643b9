"""Run directories: written atomically, resumed by the same command, never overwritten.

Every file in a run directory is written under a temporary name and
renamed, so none is ever half-written. An interrupted run keeps its
directory when it holds something to resume from (an epoch checkpoint or a
trained teacher); a run that fails earlier removes the directory it made.
"""

import contextlib
import glob
import json
import pathlib
import shutil
import tempfile
import time

from kd_keras import atomic
from kd_keras.callbacks import backup as kd_backup
from kd_keras.resolve import RunError

# Inside a run directory: the command's settings (an unfinished run resumes
# only under the same ones), the epoch checkpoint, a teacher trained by the run.
RUN_FILE = "run.json"
BACKUP_DIR = "backup"
TEACHER_FILE = "teacher.keras"
# Where the default, time-stamped output paths live (relative to the working directory).
DEFAULT_RUNS = pathlib.Path("runs")


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: where it was and what it kept.

    Args:
        out: the run directory.
        checkpoint_epoch: the epoch of the last checkpoint kept in it, or None.
        kept: whether the directory was kept (it holds a checkpoint or a
            trained teacher to resume from); False when it was removed.
    """

    def __init__(self, out, checkpoint_epoch, kept):
        super().__init__(str(out))
        self.out = pathlib.Path(out)
        self.checkpoint_epoch = checkpoint_epoch
        self.kept = kept


@contextlib.contextmanager
def run_directory(out, signature=None):
    """Create (or reopen) a run directory for the block; on failure keep it only if resumable.

    Writes `run.json` (the signature) first. A `KeyboardInterrupt` in the
    block becomes `Interrupted`, saying what was kept.

    Args:
        out: the directory.
        signature: the command's settings, or None.

    Yields:
        The directory as a `pathlib.Path`.
    """
    out = pathlib.Path(out)
    check_unfinished(out, signature)
    created = not out.exists()
    new_parents = [parent for parent in out.parents if not parent.exists()]
    out.mkdir(parents=True, exist_ok=True)
    if signature is not None:
        write_json(out / RUN_FILE, signature)
    try:
        yield out
    except BaseException as error:
        # An interrupted or diverged run keeps what it can resume from; one
        # that failed earlier leaves nothing behind, not even the runs/
        # folder it made for itself.
        kept = resumable(out) or not created
        if not kept:
            shutil.rmtree(out, ignore_errors=True)
            for parent in new_parents:  # innermost first; only empty ones:
                with contextlib.suppress(OSError):  # another run may be in runs/ now
                    parent.rmdir()
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, Interrupted):
            checkpoint = kd_backup.read_checkpoint(out / BACKUP_DIR) if kept else None
            raise Interrupted(out, checkpoint and checkpoint["epoch"], kept) from error
        raise


def check_unfinished(out, signature=None):
    """Refuse a finished run, another command's unfinished run, or a directory we cannot write."""
    if (out / "metrics.json").exists():
        raise RunError(f"{out} already holds a finished run: choose another --out.")
    check_writable(out)
    path = out / RUN_FILE
    if signature is None or not path.is_file() or not resumable(out):
        return
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        stored = None
    if stored != signature:
        raise RunError(
            f"{out} holds an unfinished run of another command ({path} differs): "
            "rerun that command to resume it, or choose another --out."
        )


def check_writable(out, what="the run directory"):
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"Cannot create {what} {out}: {existing} is a file; choose another --out.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise RunError(
            f"Cannot write {what} {out} ({error.strerror or error}): choose a writable --out."
        ) from error


def resumable(out):
    """True when `out` holds an epoch checkpoint or a trained teacher to resume from."""
    return (out / BACKUP_DIR / kd_backup.CHECKPOINT).exists() or (out / TEACHER_FILE).exists()


def write_json(path, content):
    """Write `content` as indented, sorted JSON, atomically."""
    # Written to a temporary name and renamed, so a reader never sees half a file.
    atomic.write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def default_out(kind, recipe, dataset):
    """Return the time-stamped default output path, `runs/<kind>-<recipe>-<dataset>-<time>`."""
    return DEFAULT_RUNS / f"{run_prefix(kind, recipe, dataset)}{time.strftime('%Y%m%d-%H%M%S')}"


def run_prefix(kind, recipe, dataset):
    """The name prefix of default run directories, `<kind>-<recipe>-<dataset>-`."""
    return f"{kind}-{recipe}-{dataset.replace(':', '_')}-"


def find_unfinished(prefix, signature):
    """Return the latest unfinished, resumable run directory `<prefix>*` of `signature`, or None.

    What `distill_job` without `out` resumes: a directory whose `run.json`
    equals this command's settings, which has no `metrics.json` and holds a
    checkpoint (or a trained teacher). The latest is the last by name (the
    default names end in a time stamp).

    Args:
        prefix: path prefix of the candidates, e.g. `runs/distill-hard-digits-`.
        signature: the settings the candidate's `run.json` must equal.

    Returns:
        A `pathlib.Path`, or None.

    Example:
    ```python
    kd_keras.run_directory.find_unfinished("runs/distill-hard-digits-", signature)
    ```
    """
    prefix = pathlib.Path(prefix)
    if not prefix.parent.is_dir():
        return None
    candidates = sorted(prefix.parent.glob(f"{glob.escape(prefix.name)}*"), reverse=True)
    for candidate in candidates:
        if not candidate.is_dir() or (candidate / "metrics.json").exists():
            continue
        if not resumable(candidate):
            continue
        try:
            stored = json.loads((candidate / RUN_FILE).read_text())
        except (OSError, ValueError):
            continue
        if stored == signature:
            return candidate
    return None
