"""PBA's explore step, the `custom_explore_fn` of Ray Tune's population-based training."""

import numpy as np

from kd_keras.augment import pba
from kd_keras.search.trainable import POLICY


class PolicyExplore:
    """Perturb the policy in a trial's config the way PBA does, keeping it on the grid.

    Ray Tune's `PopulationBasedTraining` calls it on a copy of the config of
    the trial being cloned (exploit) and trains the clone under the config it
    returns. Each of the policy's parameters is resampled with probability
    `resample_probability`, else shifted by 0 to 3 levels up or down and
    clipped to its grid (`kd_keras.augment.pba.Policy.explore`). It holds its
    own seeded generator, so a search is reproducible up to Ray's scheduling.

    References:
        Ho et al. Population Based Augmentation, ICML 2019; Fu et al.
        Role-Wise Data Augmentation for Knowledge Distillation,
        arXiv:2004.08861 (seed 000).

    Args:
        resample_probability: probability of resampling a parameter instead
            of shifting it.
        seed: seed of the generator.

    Returns:
        Called on a config dict, a new config dict with a new `"policy"`.

    Example:
    ```python
    explore = kd_keras.search.PolicyExplore(seed=0)
    config = explore({"policy": kd_keras.augment.pba.Policy.zeros().flat()})
    ```
    """

    def __init__(self, resample_probability=0.2, seed=0):
        if not 0.0 <= resample_probability <= 1.0:
            raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability}.")
        self.resample_probability = float(resample_probability)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, config):
        policy = pba.Policy.from_flat(list(config[POLICY])).explore(
            self._rng, resample_probability=self.resample_probability
        )
        return {**config, POLICY: [int(level) for level in policy.flat()]}
