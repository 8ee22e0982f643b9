"""The figures kd_keras writes, drawn with Pillow: labelled image grids and policy small multiples.

`image_grid` lays out rows of images (e.g. originals, then the augmenter's
views of them), each row labelled on the left and each image captioned
below (e.g. the teacher's and student's predicted classes), upscaled by a
whole factor with nearest-neighbour so every pixel stays a sharp square.
`plot_policy_trajectory` draws one small panel per augmentation op instead
of fourteen look-alike colours in one plot.
"""

import math

import numpy as np

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
FAINT = (200, 200, 200)
# Magnitude and probability in every panel (Tableau's blue and orange).
SERIES_COLOURS = {"magnitude": (31, 119, 180), "probability": (255, 127, 14)}
FONT_SIZE = 13
MARGIN = 8
GAP = 6


def _font(size=FONT_SIZE):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def upscale_factor(height, width, min_size=112):
    """Return the whole factor that makes the longer side of an image at least `min_size` pixels."""
    return max(1, math.ceil(min_size / max(height, width, 1)))


def image_grid(rows, captions=None, title=None, min_size=112):
    """Draw rows of equally sized images, labelled and captioned, as one RGB picture.

    Each row is `(label, images)`: the label is written left of the row,
    the images (float `(n, height, width, 3)` in `[0, 1]`; NaN shows black)
    side by side, each upscaled by `upscale_factor` with nearest-neighbour.
    `captions[r][i]` (a string, or None) is written under image `i` of row
    `r`. Rows may hold different numbers of images.

    Args:
        rows: a list of `(label, images)`.
        captions: None, or one list of strings per row.
        title: an optional line above the grid (e.g. what the captions mean).
        min_size: the longer side of each image is drawn at least this large.

    Returns:
        `(pixels, boxes)`: a uint8 `(H, W, 3)` array, and for each row the
        `(top, left)` pixel of each image in it.

    Example:
    ```python
    pixels, _ = kd_keras.plots.image_grid([("original", x), ("view", views)])
    ```
    """
    from PIL import Image
    from PIL import ImageDraw

    if not rows:
        raise ValueError("image_grid needs at least one (label, images) row.")
    shapes = {tuple(np.shape(images)[1:]) for _, images in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[-1] != 3:
        raise ValueError(
            f"image_grid needs RGB images of one shape (height, width, 3) in every row, got {shapes}."
        )
    height, width, _ = next(iter(shapes))
    factor = upscale_factor(height, width, min_size)
    cell_height, cell_width = height * factor, width * factor
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = _text_size(measure, "Ag0", font)[1] + 4
    label_width = max(_text_size(measure, str(label), font)[0] for label, _ in rows) + GAP
    has_captions = captions is not None and any(any(row or ()) for row in captions)
    caption_height = line_height if has_captions else 0
    columns = max(len(images) for _, images in rows)
    title_height = line_height + GAP if title else 0
    grid_width = MARGIN + label_width + columns * (cell_width + GAP) - GAP + MARGIN
    grid_height = (
        MARGIN + title_height + len(rows) * (cell_height + caption_height + GAP) - GAP + MARGIN
    )
    if title:
        grid_width = max(grid_width, _text_size(measure, title, font)[0] + 2 * MARGIN)
    canvas = Image.new("RGB", (grid_width, grid_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((MARGIN, MARGIN), title, fill=INK, font=font)
    boxes = []
    for r, (label, images) in enumerate(rows):
        top = MARGIN + title_height + r * (cell_height + caption_height + GAP)
        label_h = _text_size(draw, str(label), font)[1]
        draw.text((MARGIN, top + (cell_height - label_h) // 2), str(label), fill=INK, font=font)
        row_boxes = []
        for i, image in enumerate(np.asarray(images, dtype="float32")):
            left = MARGIN + label_width + i * (cell_width + GAP)
            pixels = np.round(np.clip(np.nan_to_num(image, nan=0.0), 0.0, 1.0) * 255.0)
            pixels = np.repeat(np.repeat(pixels.astype("uint8"), factor, 0), factor, 1)
            canvas.paste(Image.fromarray(pixels, "RGB"), (left, top))
            row_boxes.append((top, left))
            caption = captions[r][i] if has_captions and i < len(captions[r]) else None
            if caption:
                text_w, _ = _text_size(draw, caption, font)
                draw.text(
                    (left + (cell_width - text_w) // 2, top + cell_height + 2),
                    caption,
                    fill=INK,
                    font=font,
                )
        boxes.append(row_boxes)
    return np.asarray(canvas), boxes


def plot_policy_trajectory(history, path, columns=5):
    """Draw a learned policy's magnitude and probability per epoch, one small panel per op, as a PNG.

    Each op gets its own panel titled with its name: both series on a
    `[0, 1]` axis over the epochs, in the same two colours everywhere (a
    legend on top), so no op has to be told apart by colour.

    Args:
        history: records `{"epoch": e, "magnitude/<op>": m,
            "probability/<op>": p, ...}`, as `PolicyTrajectory.history`.
        path: the PNG file to write.
        columns: panels per row.

    Returns:
        `path`.

    Example:
    ```python
    kd_keras.plots.plot_policy_trajectory(trajectory.history, "policy.png")
    ```
    """
    from PIL import Image
    from PIL import ImageDraw

    if not history:
        raise ValueError("history is empty: record at least one epoch.")
    names = []
    for record in history:
        for key in record:
            if "/" in key and key.split("/", 1)[1] not in names:
                names.append(key.split("/", 1)[1])
    if not names:
        raise ValueError("history has no magnitude/<op> or probability/<op> records to draw.")
    epochs = [record["epoch"] for record in history]
    first, last = min(epochs), max(epochs)
    span = max(last - first, 1)
    font, small = _font(), _font(FONT_SIZE - 2)
    panel_width, panel_height, axis_left, axis_bottom = 190, 120, 26, 18
    columns = max(1, min(columns, len(names)))
    panel_rows = math.ceil(len(names) / columns)
    legend_height = 24
    width = MARGIN + columns * (panel_width + GAP) - GAP + MARGIN
    height = MARGIN + legend_height + panel_rows * (panel_height + GAP) - GAP + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = MARGIN
    for series, colour in SERIES_COLOURS.items():
        draw.line([(x, MARGIN + 8), (x + 24, MARGIN + 8)], fill=colour, width=3)
        draw.text((x + 30, MARGIN), series, fill=INK, font=font)
        x += 30 + _text_size(draw, series, font)[0] + 24
    draw.text((x, MARGIN), f"per epoch, {first} to {last}", fill=INK, font=font)
    for index, name in enumerate(names):
        left = MARGIN + (index % columns) * (panel_width + GAP)
        top = MARGIN + legend_height + (index // columns) * (panel_height + GAP)
        draw.text((left + axis_left, top), name, fill=INK, font=font)
        plot_top = top + 18
        box = (left + axis_left, plot_top, left + panel_width - 4, top + panel_height - axis_bottom)
        draw.rectangle(box, outline=FAINT)
        draw.text((left, box[1] - 4), "1", fill=INK, font=small)
        draw.text((left, box[3] - 10), "0", fill=INK, font=small)
        draw.text((box[0], box[3] + 2), str(first), fill=INK, font=small)
        last_label = str(last)
        draw.text(
            (box[2] - _text_size(draw, last_label, small)[0], box[3] + 2),
            last_label,
            fill=INK,
            font=small,
        )

        def point(epoch, value, box=box):
            return (
                box[0] + (epoch - first) / span * (box[2] - box[0]),
                box[3] - float(np.clip(value, 0.0, 1.0)) * (box[3] - box[1]),
            )

        for series, colour in SERIES_COLOURS.items():
            points = [
                point(record["epoch"], record[f"{series}/{name}"])
                for record in history
                if f"{series}/{name}" in record
            ]
            if len(points) == 1:
                x0, y0 = points[0]
                draw.ellipse([x0 - 2, y0 - 2, x0 + 2, y0 + 2], fill=colour)
            elif points:
                draw.line(points, fill=colour, width=2)
    canvas.save(path, format="PNG")
    return path
