"""TFDS access shared by the image and text loaders: fail fast offline, with the fix."""

import os
import socket

import tensorflow as tf

from kd_keras.data.core import DataError


def prepared_builder(name, data_dir=None, download="auto"):
    """Return the TFDS builder of `name`, prepared, or fail at once with the fix.

    Offline, a data set that is not prepared under `data_dir` fails at once
    with instructions, instead of TFDS retrying its download for minutes.

    Args:
        name: a TFDS name, e.g. `"cifar100"`.
        data_dir: TFDS data directory (default: TFDS's own).
        download: `True` downloads if needed, `False` never downloads, and
            `"auto"` downloads only when the TFDS servers are reachable.

    Returns:
        A prepared `tfds.core.DatasetBuilder`.

    Example:
    ```python
    builder = kd_keras.data.tfds.prepared_builder("cifar10", download=False)
    ```
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(
            f"Unknown TFDS data set {name!r}: see tfds.list_builders() for names."
        ) from error
    if not is_prepared(builder):
        if download is False or (download == "auto" and not servers_reachable()):
            raise DataError(
                f"TFDS data set {name!r} is not prepared in {builder.data_dir} and "
                f"cannot be downloaded here: run `tfds build {name}` on a "
                "connected machine and pass its --data_dir."
            )
        builder.download_and_prepare()
    return builder


def is_prepared(builder):
    """True when the builder's data is on disk (its `dataset_info.json` exists)."""
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def servers_reachable(host="storage.googleapis.com", port=443, timeout=3.0):
    """True when the TFDS download servers answer within `timeout` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
