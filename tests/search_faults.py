"""A trial callback that fails once, to exercise the search's fault tolerance.

`kd_keras.search.search(callbacks=[FailOnce(marker)])` makes the first trial
to finish an epoch create `marker` and raise, once; Ray then restarts it from
its last reported checkpoint. Run as a script, it runs the `kd-keras` command
line with that callback in every search:

    python tests/search_faults.py MARKER search --role=teacher ...
"""

import functools
import pathlib
import sys

import keras

MESSAGE = "failure injected by search_faults.FailOnce"


class InjectedFailure(RuntimeError):
    """The one failure `FailOnce` raises."""


class FailOnce(keras.callbacks.Callback):
    """Raise once, after the first epoch any trial finishes, and leave `marker` behind."""

    def __init__(self, marker):
        super().__init__()
        self.marker = str(marker)

    def on_epoch_end(self, epoch, logs=None):
        marker = pathlib.Path(self.marker)
        if not marker.exists():
            marker.touch()
            raise InjectedFailure(f"{MESSAGE} after epoch {epoch + 1}")


def register_by_value():
    """Pickle this module's classes by value: Ray's workers cannot import `tests/`."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[FailOnce.__module__])


if __name__ == "__main__":
    marker, *arguments = sys.argv[1:]
    import kd_keras.search
    from kd_keras import cli

    register_by_value()
    kd_keras.search.search = functools.partial(kd_keras.search.search, callbacks=[FailOnce(marker)])
    sys.argv = ["kd-keras", *arguments]
    cli.run()
