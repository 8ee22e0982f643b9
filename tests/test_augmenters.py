"""Every augmenter through the shared contract harness (tests/augmenter_test_case.py)."""

import numpy as np
import pytest
from augmenter_test_case import run_augmenter_test

import kd_keras
from kd_keras import augment

# Every augmenter trains, saves and compiles under XLA: the large tier.
pytestmark = pytest.mark.large


def vae():
    return kd_keras.models.VAE((8, 8, 1), latent_dim=4, filters=4)


# name -> (make(seed), learnable, random, xla)
CASES = {
    "MixUp": (lambda seed: augment.MixUp(seed=seed), False, True, True),
    "MixUp per sample": (lambda seed: augment.MixUp(per="sample", seed=seed), False, True, True),
    "CutMix": (lambda seed: augment.CutMix(seed=seed), False, True, True),
    "CutMixPick": (lambda seed: augment.CutMixPick(seed=seed), False, True, True),
    "FunctionMatching": (lambda seed: augment.FunctionMatching(seed=seed), False, True, True),
    "SpatialAugmenter search": (
        lambda seed: augment.SpatialAugmenter(seed=seed),
        False,
        True,
        True,
    ),
    # The learned samplers start at the identity warp (a zero-initialised
    # head), whatever their noise: views depend on the seed once trained.
    "SpatialAugmenter network": (
        lambda seed: augment.SpatialAugmenter(sampler="network", candidates=1, seed=seed),
        True,
        False,
        True,
    ),
    "SpatialAugmenter gaussian": (
        lambda seed: augment.SpatialAugmenter(sampler="gaussian", candidates=1, seed=seed),
        True,
        True,
        True,
    ),
    # Starts at delta = 0 (the VAE's reconstruction), whatever its noise.
    "GenerativeAugmenter": (
        lambda seed: augment.GenerativeAugmenter(vae(), seed=seed),
        True,
        False,
        True,
    ),
    "LearnedPolicy": (lambda seed: augment.LearnedPolicy(seed=seed), True, True, True),
    "BackwardPerturbation": (
        # Deterministic given its inputs: gradient steps from x, no draws at fraction 1.
        lambda seed: augment.BackwardPerturbation(seed=seed),
        False,
        False,
        True,
    ),
    "BackwardPerturbation fraction": (
        lambda seed: augment.BackwardPerturbation(fraction=0.5, seed=seed),
        False,
        True,
        True,
    ),
    "Stack LearnedPolicy CutMixPick": (
        lambda seed: augment.Stack(
            [augment.LearnedPolicy(seed=seed), augment.CutMixPick(seed=seed + 100)], seed=seed
        ),
        True,
        True,
        True,
    ),
    "Stack SpatialAugmenter MixUp": (
        lambda seed: augment.Stack(
            [augment.SpatialAugmenter(seed=seed), augment.MixUp(seed=seed + 100)], seed=seed
        ),
        False,
        True,
        True,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_augmenter_contract(name, tmp_path):
    make, learnable, random, xla = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 8, 8, 1)).astype("float32")  # images in [0, 1]
    y = rng.integers(0, 4, size=8).astype("int32")
    run_augmenter_test(
        make, learnable=learnable, random=random, xla=xla, tmp_path=tmp_path, inputs=(x, y)
    )


def test_every_augmenter_class_is_in_the_harness():
    classes = {
        getattr(augment, name)
        for name in dir(augment)
        if isinstance(getattr(augment, name), type)
        and issubclass(getattr(augment, name), augment.Augmenter)
        and getattr(augment, name) is not augment.Augmenter
    }
    covered = {type(make(0)) for make, *_ in CASES.values()}
    assert classes <= covered, classes - covered
