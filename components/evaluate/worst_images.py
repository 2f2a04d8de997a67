"""The worst-classified test images as small pictures: evaluate's ``worst_images`` artifact, for the report.

evaluate writes it because it alone holds the test images: KFP's launcher downloads every input
artifact of a step in full, so a report step taking the Dataset would fetch all of it to draw a
dozen thumbnails. The artifact is a directory:

- ``index.json``: a list, worst first, of ``{"path", "true_class", "predicted_class",
  "probability", "true_class_probability", "file"}`` (the prediction as in the predictions file;
  ``file`` names the picture beside it), or ``"problem"`` instead of ``"file"`` when the image
  could not be read;
- the pictures, ``01.png``, ``02.jpg``, ...: the whole image, scaled to at most ``THUMBNAIL_SIDE``
  pixels on its longest side (small images are enlarged to ``MIN_SIDE`` without smoothing, so an
  8x8 digit stays legible), PNG or JPEG, whichever is smaller.

Torch-free (Pillow and NumPy).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.images import ImageError, decode, read_header
from components.evaluate.predictions import Prediction, PredictionsFileError, parse_row, worst_classified

WORST_IMAGES = 16
THUMBNAIL_SIDE = 128
MIN_SIDE = 64
INDEX_FILE = "index.json"
PICTURE_NAME = re.compile(r"^\d{2,3}\.(png|jpg)$")
MIME = {".png": "image/png", ".jpg": "image/jpeg"}


class WorstImagesError(ValueError):
    """A worst_images directory that is not what evaluate writes; the message says where."""


@dataclass
class WorstImage:
    prediction: Prediction
    picture: bytes | None  # None when the image could not be read
    mime: str = ""
    problem: str = ""


def thumbnail(path: str | Path) -> tuple[bytes, str]:
    """The image at ``path`` scaled for a report: (encoded bytes, MIME type)."""
    side = THUMBNAIL_SIDE
    channels = 1 if read_header(path).grayscale else 3
    array = decode(path, channels, draft_to=(side, side))
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    longest = max(image.size)
    if longest > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    elif longest < MIN_SIDE:
        scale = MIN_SIDE // longest
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    png, jpeg = io.BytesIO(), io.BytesIO()
    image.save(png, "PNG", optimize=True)
    image.save(jpeg, "JPEG", quality=85)
    return (png.getvalue(), "image/png") if png.tell() <= jpeg.tell() else (jpeg.getvalue(), "image/jpeg")


def write_worst_images(
    directory: str | Path, predictions: Iterable[Prediction], dataset_root: str | Path, count: int = WORST_IMAGES
) -> int:
    """Write the ``count`` worst-classified images of ``predictions`` (paths under ``dataset_root``); returns
    how many were written. An image that cannot be read is listed with the problem, never fatal."""
    entries = []
    with atomic_directory(directory) as staging:
        for number, prediction in enumerate(worst_classified(predictions, count), start=1):
            entry = {
                "path": prediction.path,
                "true_class": prediction.true_class,
                "predicted_class": prediction.predicted_class,
                "probability": prediction.probability,
                "true_class_probability": prediction.true_class_probability,
            }
            try:
                data, mime = thumbnail(Path(dataset_root) / prediction.path)
            except ImageError as error:
                entry["problem"] = str(error)
            else:
                entry["file"] = f"{number:02d}{'.png' if mime == 'image/png' else '.jpg'}"
                (staging / entry["file"]).write_bytes(data)
            entries.append(entry)
        write_json_atomic(staging / INDEX_FILE, entries)
    return len(entries)


def read_worst_images(directory: str | Path) -> list[WorstImage]:
    """The pictures and what was predicted for them, worst first; ``WorstImagesError`` when the directory is
    not what evaluate writes."""
    directory = Path(directory)
    try:
        entries = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WorstImagesError(f"{directory} has no readable {INDEX_FILE}: {error}") from None
    if not isinstance(entries, list):
        raise WorstImagesError(f"{directory / INDEX_FILE} holds {type(entries).__name__}, not a list")
    images = []
    for number, entry in enumerate(entries, start=1):
        where = f"{directory / INDEX_FILE} entry {number}"
        if not isinstance(entry, dict):
            raise WorstImagesError(f"{where} is not an object")
        fields = [entry.get(k) for k in ("path", "true_class", "predicted_class")]
        fields += [str(entry.get(k)) for k in ("probability", "true_class_probability")]
        if not all(isinstance(f, str) for f in fields):
            raise WorstImagesError(f"{where}: path and class names must be text")
        try:
            prediction = parse_row(fields, where)
        except PredictionsFileError as error:
            raise WorstImagesError(str(error)) from None
        name = entry.get("file")
        if name is None:
            images.append(WorstImage(prediction, None, problem=str(entry.get("problem") or "no picture")))
            continue
        if not isinstance(name, str) or not PICTURE_NAME.match(name):
            raise WorstImagesError(f"{where}: file {name!r} is not a picture name evaluate writes (like 01.png)")
        try:
            data = (directory / name).read_bytes()
        except OSError as error:
            raise WorstImagesError(f"{where}: {error}") from None
        images.append(WorstImage(prediction, data, MIME[Path(name).suffix]))
    return images
