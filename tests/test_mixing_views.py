"""The mixing augmenters' views against the images they show: labels, dominant labels, box positions.

Image `i` of a batch is filled with the value `i + 1` and has its own class
`i`, so a view's pixels say which images it mixes and in what proportion,
independently of the layer's own bookkeeping.
"""

import keras
import numpy as np
import pytest
from conftest import per_sample

import kd_keras

SHAPE = (8, 8, 1)
COUNT = 8  # one class per image


def _constant_images(count=COUNT, shape=SHAPE):
    return (np.arange(count, dtype="float32") + 1)[:, None, None, None] * np.ones(
        (count, *shape), "float32"
    )


def _twin(layer):
    # The same draws as `layer` from here on.
    twin = type(layer).from_config(layer.get_config())
    twin.seed_generator.state.assign(layer.seed_generator.state)
    return twin


def _networks():
    rng = np.random.default_rng(0)
    w_t = keras.ops.convert_to_tensor(rng.normal(size=(64, COUNT)).astype("float32"))
    w_s = keras.ops.convert_to_tensor(rng.normal(size=(64, COUNT)).astype("float32"))

    def linear(w):
        return lambda v: keras.ops.reshape(keras.ops.cast(v, "float32"), (-1, 64)) @ w

    return linear(w_t), linear(w_s)


def _read_mix(view, sources, partners, lam, kind):
    """Check that `view` mixes `sources` (share `lam`) with `partners`."""
    if kind == "mixup":
        share = lam[:, None, None, None]
        np.testing.assert_allclose(view, share * sources + (1 - share) * partners, rtol=1e-6)
    else:
        own = (view == sources).mean(axis=(1, 2, 3))
        other = (view == partners).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(own, lam, atol=1e-6)
        np.testing.assert_allclose(own + other, 1.0, atol=1e-6)


LAYERS = {
    "mixup": kd_keras.augment.MixUp,
    "cutmix": kd_keras.augment.CutMix,
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_unrelabelled_views_carry_each_image_mixed_label(kind):
    x, y = _constant_images(), np.arange(COUNT)
    layer = LAYERS[kind](relabel=False, num_classes=COUNT, seed=5, per="sample")
    layer.build((None, *SHAPE))
    _, partner, lam = (np.array(v) for v in _twin(layer).mix_images(x))
    views = layer.views(x, y, None, None)
    mixed = np.array(views.x)[COUNT:]
    _read_mix(mixed, x, x[partner], lam, kind)
    assert np.all(np.abs(lam - 0.5) > 0.01)  # the two shares differ
    one_hot = np.eye(COUNT)
    expected = lam[:, None] * one_hot[y] + (1 - lam[:, None]) * one_hot[y[partner]]
    labels = np.array(views.y)
    np.testing.assert_allclose(labels[:COUNT], one_hot)
    np.testing.assert_allclose(labels[COUNT:], expected, atol=1e-6)
    np.testing.assert_array_equal(per_sample(views, "label_weight"), [1.0] * COUNT + [9.0] * COUNT)
    np.testing.assert_array_equal(
        per_sample(views, "distill_weight"), [1.0] * COUNT + [0.0] * COUNT
    )


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_relabelled_views_carry_the_label_of_the_image_covering_more(kind):
    x = _constant_images(64)
    y = np.arange(64) % COUNT
    layer = LAYERS[kind](seed=2, per="sample")
    layer.build((None, *SHAPE))
    _, partner, lam = (np.array(v) for v in _twin(layer).mix_images(x))
    views = layer.views(x, y, None, None)
    mixed = np.array(views.x)[64:]
    _read_mix(mixed, x, x[partner], lam, kind)
    covering = np.where(lam >= 0.5, y, y[partner])
    np.testing.assert_array_equal(np.array(views.y)[64:], covering)
    differ = y != y[partner]
    assert np.sum(differ & (lam > 0.5)) >= 5 and np.sum(differ & (lam < 0.5)) >= 5
    np.testing.assert_array_equal(per_sample(views, "label_weight"), [1.0] * 64 + [0.0] * 64)


def test_cutmix_boxes_are_spread_over_the_image():
    # The centre is uniform over the pixels: over many boxes every quadrant
    # holds about a quarter of the box centres and every pixel is pasted over.
    count, shape = 512, (16, 20, 1)
    x = _constant_images(count, shape)
    mixed, partner, _ = (
        np.array(v) for v in kd_keras.augment.CutMix(seed=3, per="sample").mix_images(x)
    )
    boxes = (mixed != x)[..., 0]
    boxes = boxes[boxes.any(axis=(1, 2))]
    assert len(boxes) > 0.9 * count
    rows = np.array([np.nonzero(box.any(axis=1))[0].mean() for box in boxes])
    cols = np.array([np.nonzero(box.any(axis=0))[0].mean() for box in boxes])
    middle_row, middle_col = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    for top in (True, False):
        for left in (True, False):
            inside = ((rows < middle_row) == top) & ((cols < middle_col) == left)
            inside &= (rows != middle_row) & (cols != middle_col)
            assert 0.15 < inside.mean() < 0.35, (top, left, inside.mean())
    assert abs(rows.mean() - middle_row) < 0.5 and abs(cols.mean() - middle_col) < 0.5
    assert boxes.mean(axis=0).min() > 0.05


@pytest.mark.parametrize("relabel", [True, False])
@pytest.mark.parametrize("include_clean", [True, False])
def test_cutmix_pick_views_without_relabelling_or_clean_half(relabel, include_clean):
    x, y = _constant_images(), np.arange(COUNT)
    teacher_fn, student_fn = _networks()
    layer = kd_keras.augment.CutMixPick(
        n_run=3,
        relabel=relabel,
        include_clean=include_clean,
        num_classes=COUNT,
        seed=4,
        per="sample",
    )
    layer.build((None, *SHAPE))
    candidates, source, partner, lam = (np.array(v) for v in _twin(layer).candidates(x))
    scores = np.array(layer.score(teacher_fn(candidates), student_fn(candidates)))
    picked = np.argsort(-scores, kind="stable")[:COUNT]
    assert scores[picked].min() > np.delete(scores, picked).max()
    views = layer.views(x, y, teacher_fn, student_fn)
    inputs, labels = np.array(views.x), np.array(views.y)
    clean = COUNT if include_clean else 0
    assert inputs.shape == (clean + COUNT, *SHAPE)
    np.testing.assert_array_equal(inputs[:clean], x[:clean])
    shown = inputs[clean:]
    np.testing.assert_array_equal(shown, candidates[picked])
    # What the shown pixels say: source outside the box, partner inside, share lam.
    _read_mix(shown, x[source[picked]], x[partner[picked]], lam[picked], "cutmix")
    np.testing.assert_allclose(
        np.array(views.teacher_logits), np.array(teacher_fn(inputs)), atol=1e-5
    )
    one_hot = np.eye(COUNT)
    s, p, share = source[picked], partner[picked], lam[picked]
    if relabel:
        np.testing.assert_array_equal(labels[clean:], np.where(share >= 0.5, s, p))
        np.testing.assert_array_equal(labels[:clean], y[:clean])
        np.testing.assert_array_equal(
            per_sample(views, "label_weight"), [1.0] * clean + [0.0] * COUNT
        )
    else:
        expected = share[:, None] * one_hot[s] + (1 - share[:, None]) * one_hot[p]
        np.testing.assert_allclose(labels[clean:], expected, atol=1e-6)
        np.testing.assert_allclose(labels[:clean], one_hot[:clean])
        if include_clean:
            np.testing.assert_array_equal(
                per_sample(views, "label_weight"), [1.0] * COUNT + [9.0] * COUNT
            )
            np.testing.assert_array_equal(
                per_sample(views, "distill_weight"), [1.0] * COUNT + [0.0] * COUNT
            )
        else:
            assert (views.label_weight, views.distill_weight) == (1.0, 1.0)
