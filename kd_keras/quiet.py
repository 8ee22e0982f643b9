"""Native (C++) log lines of the TFLite converter and LiteRT, kept out of the output.

The TFLite converter and the LiteRT interpreter write straight to the
process's stderr from C++ ("Ignored output_format.", "Created TensorFlow Lite
XNNPACK delegate for CPU.", absl's "All log messages before
absl::InitializeLog() ..."), past Python's `sys.stderr` and past
`TF_CPP_MIN_LOG_LEVEL` (they are warnings, or printed without a level).
`native_stderr_captured()` holds them back around those calls and replays
them if the call fails, so an error keeps its context.
"""

import contextlib
import os
import sys
import tempfile

_shown = False


def show_native_logs(show=True):
    """Let native stderr through from now on (`kd-keras --verbose=3`), or hold it back again.

    Args:
        show: True to show the converters' own messages.

    Example:
    ```python
    kd_keras.quiet.show_native_logs()
    ```
    """
    global _shown
    _shown = bool(show)


@contextlib.contextmanager
def native_stderr_captured():
    """Capture what native code writes to file descriptor 2 inside the block.

    Python's own `sys.stderr` writes in the block are captured too when
    `sys.stderr` is that descriptor. When the block raises, everything
    captured is written to `sys.stderr` before the exception propagates.

    Example:
    ```python
    with kd_keras.quiet.native_stderr_captured():
        flatbuffer = converter.convert()
    ```
    """
    if _shown:
        yield
        return
    descriptor = 2  # where C++ writes, whatever sys.stderr is
    sys.stderr.flush()
    try:
        saved = os.dup(descriptor)
    except OSError:  # no stderr at all
        yield
        return
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), descriptor)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, descriptor)
        os.close(saved)
        if failed:
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            sys.stderr.flush()
        capture.close()
