"""kd_keras.plots: the labelled image grid (views.png) and the policy's small multiples (policy.png)."""

import numpy as np
import pytest
from PIL import Image

from kd_keras import plots


def block(grid, box, size):
    top, left = box
    return grid[top : top + size, left : left + size]


def upscaled(image, factor):
    return np.repeat(np.repeat(image, factor, 0), factor, 1)


def test_image_grid_lays_out_labelled_rows_upscaled_by_nearest_neighbour():
    rng = np.random.default_rng(1)
    digits = rng.uniform(size=(3, 28, 28, 3)).astype("float32")
    views = rng.uniform(size=(2, 28, 28, 3)).astype("float32")
    views[1, 0, 0] = np.nan
    pixels, boxes = plots.image_grid(
        [("original", digits), ("stage 1", views)], [["a", "b", "c"], ["d", None]], title="t"
    )
    assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
    assert plots.upscale_factor(28, 28) == 4 and plots.upscale_factor(1, 40) == 3
    assert [len(row) for row in boxes] == [3, 2]
    for row, images in enumerate((digits, views)):
        for i, image in enumerate(images):
            expected = np.round(np.nan_to_num(image) * 255).astype("uint8")
            np.testing.assert_array_equal(block(pixels, boxes[row][i], 112), upscaled(expected, 4))
    # Images do not overlap, and the rows stack downwards.
    assert boxes[0][1][1] - boxes[0][0][1] > 112 and boxes[1][0][0] - boxes[0][0][0] > 112
    with pytest.raises(ValueError, match="RGB images of one shape"):
        plots.image_grid([("a", digits), ("b", digits[:, :20])])


def test_the_policy_is_drawn_as_one_panel_per_op(tmp_path):
    names = [f"Op{i}" for i in range(14)]
    history = [
        {
            "epoch": e,
            **{f"magnitude/{n}": 0.8 for n in names},
            **{f"probability/{n}": 0.5 - 0.01 * e * i for i, n in enumerate(names)},
        }
        for e in range(4)
    ]
    path = plots.plot_policy_trajectory(history, tmp_path / "policy.png", columns=5)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    height, width, _ = pixels.shape
    assert width > 2 * height  # 5 panels across, 3 down
    blue, orange = (np.array(c) for c in plots.SERIES_COLOURS.values())

    def has(colour, region):
        return bool(np.all(region == colour, axis=-1).any())

    # Both series, in the same two colours, in each of the 14 panels, none in the 15th place.
    panel_width = (width - 2 * plots.MARGIN + plots.GAP) // 5
    panel_height = (height - 2 * plots.MARGIN - 24 + plots.GAP) // 3
    for index in range(15):
        top = plots.MARGIN + 24 + (index // 5) * panel_height
        left = plots.MARGIN + (index % 5) * panel_width
        region = pixels[top : top + panel_height, left : left + panel_width]
        assert has(blue, region) == has(orange, region) == (index < 14), index
    # Exactly two line colours in the whole figure besides ink and grey.
    colours = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert tuple(blue) in colours and tuple(orange) in colours
    with pytest.raises(ValueError, match="history is empty"):
        plots.plot_policy_trajectory([], tmp_path / "empty.png")
