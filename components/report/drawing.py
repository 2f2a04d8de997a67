"""The report's pictures, drawn with Pillow alone (the components image has it; matplotlib is a dev extra).

- ``curves_png``: training and validation loss and accuracy per epoch, the candidate's in solid
  blue lines over the baseline's in dashed orange ones;
- ``confusion_png``: the confusion matrix, each cell coloured by its share of the true class's
  test images (blue on the diagonal, red off it), with class names up to 30 classes and class
  numbers beyond.

Each returns PNG bytes; the text a reader needs is in the report's tables as well, so a picture
never carries information alone.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (33, 33, 33)
GRID = (225, 225, 225)
CANDIDATE = {"train": (127, 167, 224), "val": (31, 95, 191)}
BASELINE = {"train": (240, 185, 138), "val": (217, 130, 43)}
RIGHT, WRONG = (31, 95, 191), (192, 57, 43)
NAMED_CLASSES_UP_TO = 30  # beyond this the matrix is labelled with class numbers
PANELS = (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_accuracy", "val_accuracy")))


def font(size: int = 12) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (FreeType), or its bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def text_width(draw: ImageDraw.ImageDraw, text: str, typeface) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=typeface)
    return right - left


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def nice_step(high: float, ticks: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that covers ``high`` in about ``ticks`` steps."""
    raw = max(high, 1e-9) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def curves_png(candidate: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None = None) -> bytes:
    """Loss and accuracy per epoch: the candidate's history over the baseline's (``history`` rows of spec.json)."""
    width, height = 960, 330
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, label = font(11), font(13)
    epochs = max([row.get("epoch", 0) for row in [*candidate, *(baseline or [])]] + [1])
    series = [("candidate", candidate, CANDIDATE, False)]
    if baseline:
        series.append(("baseline", baseline, BASELINE, True))
    for panel, (title, names) in enumerate(PANELS):
        left, top = panel * width // 2 + 58, 34
        right, bottom = (panel + 1) * width // 2 - 16, height - 74
        values = [row.get(n) for _, rows, _, _ in series for row in rows for n in names]
        values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        step = 0.2 if title == "accuracy" else nice_step(max(values + [1e-6]))
        high = 1.0 if title == "accuracy" else step * math.ceil(max(values + [1e-6]) / step - 1e-9)
        draw.text((left, 8), title, fill=INK, font=label)

        def x_of(epoch: float, left=left, right=right) -> float:
            return left + (right - left) * ((epoch - 1) / max(epochs - 1, 1) if epochs > 1 else 0.5)

        def y_of(value: float, top=top, bottom=bottom, high=high) -> float:
            return bottom - (bottom - top) * min(max(value / high, 0.0), 1.0)

        for tick in range(round(high / step) + 1):
            value = tick * step
            y = y_of(value)
            draw.line([(left, y), (right, y)], fill=GRID)
            draw.text((left - 6, y), f"{value:g}", fill=INK, font=small, anchor="rm")
        every = max(1, math.ceil(epochs / 12))
        for epoch in range(1, epochs + 1, every):
            draw.text((x_of(epoch), bottom + 6), str(epoch), fill=INK, font=small, anchor="mt")
        draw.text(((left + right) / 2, bottom + 22), "epoch", fill=INK, font=small, anchor="mt")
        draw.rectangle([left, top, right, bottom], outline=INK)
        for _, rows, colours, dashed in series:
            for name in names:
                kind = name.split("_")[0]
                points = [
                    (x_of(row["epoch"]), y_of(row[name]))
                    for row in rows
                    if isinstance(row.get(name), (int, float)) and math.isfinite(row[name]) and "epoch" in row
                ]
                _polyline(draw, points, colours[kind], dashed)
    _legend(draw, series, height - 26, small)
    return png(image)


def _polyline(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], colour, dashed: bool) -> None:
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if not dashed:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=2)
            continue
        length = math.hypot(x1 - x0, y1 - y0)
        for start in range(0, max(int(length), 1), 10):
            a, b = start / max(length, 1), min((start + 6) / max(length, 1), 1.0)
            draw.line([(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)],
                      fill=colour, width=2)  # fmt: skip
    if len(points) <= 40:
        for x, y in points:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)


def _legend(draw: ImageDraw.ImageDraw, series, y: int, typeface) -> None:
    x = 58
    for who, _, colours, dashed in series:
        for kind in ("train", "val"):
            _polyline(draw, [(x, y + 6), (x + 26, y + 6)], colours[kind], dashed)
            text = f"{who} {'training' if kind == 'train' else 'validation'}"
            draw.text((x + 32, y), text, fill=INK, font=typeface)
            x += 32 + text_width(draw, text, typeface) + 24


def _blend(colour: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """``colour`` faded towards white; a cell with any count keeps a visible tint (square root, at least 0.15),
    so a few errors among many images still show."""
    strength = 0.15 + 0.85 * math.sqrt(share)
    return tuple(round(255 + (c - 255) * strength) for c in colour)


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """The confusion matrix (rows: true class, columns: predicted), coloured by share of each row."""
    k = len(classes)
    cell = max(4, min(36, 600 // max(k, 1)))
    small, label = font(11), font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    named = k <= NAMED_CLASSES_UP_TO
    names = [shorten(name, 16) if named else str(i) for i, name in enumerate(classes)]
    gutter = max([text_width(probe, n, small) for n in names] + [10]) + 10 if named else 34
    left, top = gutter + 22, 58
    size = cell * k
    image = Image.new("RGB", (left + size + 16, top + size + 46), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), "predicted class", fill=INK, font=label)
    _vertical_text(image, "true class", (4, top), label)
    step = 1 if named else max(1, math.ceil(k / 10))
    for i in range(0, k, step):
        centre = left + i * cell + cell / 2
        draw.text((left - 6, top + i * cell + cell / 2), names[i], fill=INK, font=small, anchor="rm")
        draw.text((centre, top - 4), str(i), fill=INK, font=small, anchor="mb")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            colour = _blend(RIGHT if i == j else WRONG, share) if count else BACKGROUND
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
            if count and cell >= 24:
                ink = BACKGROUND if share > 0.5 else INK
                draw.text((x + cell / 2, y + cell / 2), str(count), fill=ink, font=small, anchor="mm")
    draw.rectangle([left - 1, top - 1, left + size, top + size], outline=INK)
    note = "colour: share of the true class's test images (blue: right, red: wrong)"
    draw.text((left, top + size + 12), note, fill=INK, font=small)
    return png(image)


def _vertical_text(image: Image.Image, text: str, at: tuple[int, int], typeface) -> None:
    probe = ImageDraw.Draw(image)
    width = text_width(probe, text, typeface) + 4
    strip = Image.new("RGB", (width, 18), BACKGROUND)
    ImageDraw.Draw(strip).text((2, 1), text, fill=INK, font=typeface)
    image.paste(strip.rotate(90, expand=True), at)
