"""The optional Ray Tune dependency, imported only when a search runs."""

INSTALL_HINT = 'pip install "kd_keras[search]"'


def import_ray():
    """Import Ray and Ray Tune, or fail with the install command of the `[search]` extra.

    `kd_keras` itself never imports Ray: only a search needs it, so it is an
    optional extra and is imported here, at the moment it is used.

    Returns:
        The `(ray, ray.tune)` modules.

    Raises:
        ImportError: Ray Tune is not installed.

    Example:
    ```python
    ray, tune = kd_keras.search.import_ray()
    ```
    """
    try:
        import ray
        from ray import tune
    except ImportError as error:
        raise ImportError(
            f"Population-based search needs Ray Tune, which is not installed: {INSTALL_HINT}"
        ) from error
    return ray, tune
