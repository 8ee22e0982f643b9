"""Every recipe's loss, one step, against a NumPy computation from its views and the paper's weights."""

import keras
import numpy as np
import pytest
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras.recipes import build


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


class Terms:
    """CE and KD of one view, in float64, from fresh passes of both networks."""

    def __init__(self, teacher, student, y):
        self.teacher, self.student, self.y = teacher, student, y

    def logits(self, view):
        t = np.array(self.teacher(view.x, training=False), "float64")
        s = np.array(self.student(view.x, training=True), "float64")
        return t, s

    def ce(self, view):
        _, s = self.logits(view)
        return -np.mean(log_softmax(s)[np.arange(len(self.y)), self.y])

    def kd(self, view, temperature=4.0):
        t, s = self.logits(view)
        log_p, log_q = log_softmax(t / temperature), log_softmax(s / temperature)
        return temperature**2 * np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1))


def tiny_vae():
    keras.utils.set_random_seed(5)
    vae = kd_keras.models.VAE((8, 8, 1), latent_dim=4, filters=4)
    vae(np.zeros((1, 8, 8, 1), "float32"))
    return vae


# recipe -> (overrides, number of views, the loss as the paper writes it).
# Views are [x, then what the augmenter adds]; a = student_loss_weight.
RECIPES = {
    "kd": ({}, 1, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * L.kd(v[0])),
    "mixup": ({}, 2, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * (L.kd(v[0]) + L.kd(v[1]))),
    "cutmix": ({}, 2, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * (L.kd(v[0]) + L.kd(v[1]))),
    "cutmix_pick": ({}, 2, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * (L.kd(v[0]) + L.kd(v[1]))),
    # Function matching: KD alone, at T = 1, on the one aggressive view.
    "funmatch": ({}, 1, lambda L, v: L.kd(v[0], temperature=1.0)),
    "hard": ({}, 2, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * (L.kd(v[0]) + L.kd(v[1]))),
    "hard_vae": ({}, 2, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * (L.kd(v[0]) + L.kd(v[1]))),
    "backward": ({}, 2, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * (L.kd(v[0]) + L.kd(v[1]))),
    # The PBA policy runs in tf.data: the step sees its views as the batch.
    "rolewise": ({}, 1, lambda L, v: 0.1 * L.ce(v[0]) + 0.9 * L.kd(v[0])),
    # TST: 0.5 [CE + KD](x) + 0.5 [CE + KD](x~), written a = 0.5, w = 1.
    "tst": ({}, 2, lambda L, v: 0.5 * (L.ce(v[0]) + L.ce(v[1])) + 0.5 * (L.kd(v[0]) + L.kd(v[1]))),
    # TST's policy, then CutMixPick on its view: x'' = pick(cutmix(x~)), labels unused.
    "tst+cutmix_pick": (
        {},
        3,
        lambda L, v: 0.5 * (L.ce(v[0]) + L.ce(v[1])) + 0.5 * (L.kd(v[0]) + L.kd(v[1]) + L.kd(v[2])),
    ),
}


def images(count=8, seed=0):
    x, y = tiny_batch(count=count, seed=seed)
    return (x - x.min()) / (x.max() - x.min()), y  # [0, 1], as the image recipes assume


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_one_step_loss_is_the_papers_computed_by_hand(recipe):
    overrides, count, paper = RECIPES[recipe]
    config = kd_keras.recipes.get(recipe, overrides)
    if recipe == "hard_vae":
        config["augmenter"]["vae"] = tiny_vae()
    teacher, student = tiny_teacher(), tiny_student()
    distiller = build.distiller(config, teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = images()
    host = build.host_augment(config)
    if host is not None:  # rolewise: the policy and PBA's final Cutout change every image
        augmented, labels = (np.array(v) for v in host(x, y))
        np.testing.assert_array_equal(labels, y)
        assert all(not np.allclose(a, b) for a, b in zip(augmented, x))
        x = augmented
    # The views the step will draw: drawn once, then the augmenter's state
    # (seeds, learned group rates, pools) is put back for the step itself.
    state = [np.array(v) for v in distiller.augmenter.variables]
    views = distiller.make_views(x, y)
    for variable, value in zip(distiller.augmenter.variables, state):
        variable.assign(value)
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert len(views) == count
    # The clean batch comes first (but in function matching, which shows
    # only its aggressive view); every other view is the augmenter's own.
    added = list(views)
    if recipe != "funmatch":
        np.testing.assert_allclose(np.array(added.pop(0).x), x, atol=1e-6)
    for view in added:
        assert not np.allclose(np.array(view.x), x, atol=1e-3)
    expected = paper(Terms(teacher, student, y), views)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5, atol=1e-6)
