"""Test datasets from real photos: crops of scikit-image's sample images, at mixed sizes, modes and formats.

scikit-image ships its sample photos inside the package, so nothing is downloaded.
Each class is crops of one photo; every crop gets its own size, aspect ratio,
file format and mode: JPEG (RGB, L, CMYK) and PNG (RGB, RGBA, P with
transparency, L, 16-bit I;16), so the readers meet what real folders hold.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = {"cat": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg", "astronaut": "astronaut.png"}
# (format, mode) cycled over the crops of each class.
ENCODINGS = (
    ("JPEG", "RGB"),
    ("PNG", "RGB"),
    ("PNG", "RGBA"),
    ("PNG", "P"),
    ("JPEG", "L"),
    ("PNG", "L"),
    ("PNG", "I;16"),
    ("JPEG", "CMYK"),
)


def photo(name: str) -> Image.Image:
    """One of scikit-image's bundled sample photos, as RGB."""
    spec = importlib.util.find_spec("skimage")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    with Image.open(data / name) as image:
        return image.convert("RGB")


def encode(crop: Image.Image, fmt: str, mode: str, path: Path) -> Path:
    """Save ``crop`` (RGB) in ``fmt`` and ``mode``; returns the file written (suffix from the format)."""
    path = path.with_suffix(".jpg" if fmt == "JPEG" else ".png")
    if mode == "I;16":
        gray = np.asarray(crop.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
        Image.fromarray(gray).save(path, format="PNG")  # uint16 arrays become mode I;16
    elif mode == "RGBA":
        rgba = crop.convert("RGBA")
        alpha = np.full(crop.size[::-1], 255, dtype=np.uint8)
        alpha[: alpha.shape[0] // 4] = 128  # partly transparent: the alpha is dropped when read
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(path, format="PNG")
    elif mode == "P":
        paletted = crop.quantize(colors=64)
        paletted.info["transparency"] = 0
        paletted.save(path, format="PNG", transparency=0)
    else:
        crop.convert(mode).save(path, format=fmt, quality=90)
    return path


def write_photo_dataset(
    directory: str | Path,
    classes: tuple[str, ...] = ("cat", "coffee", "rocket"),
    per_class: int = 16,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    min_side: int = 20,
    max_side: int = 160,
) -> Path:
    """Class folders of photo crops under ``directory`` (``<class>/<n>.png|jpg``).

    ``splits`` (e.g. ``{"train": 10, "val": 3, "test": 3}``) puts each class's crops under split
    folders instead, that many per split. Returns ``directory``.
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    plan = list((splits or {"": per_class}).items())
    counter = 0
    for name in classes:
        source = photo(PHOTOS[name])
        for split, count in plan:
            folder = directory / split / name if split else directory / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width = int(rng.integers(min_side, min(max_side, source.width) + 1))
                height = int(np.clip(width * rng.uniform(0.5, 2.0), min_side, min(max_side, source.height)))
                left = int(rng.integers(0, source.width - width + 1))
                top = int(rng.integers(0, source.height - height + 1))
                crop = source.crop((left, top, left + width, top + height))
                fmt, mode = ENCODINGS[counter % len(ENCODINGS)]
                counter += 1
                encode(crop, fmt, mode, folder / f"{name}-{split or 'all'}-{i:03d}")
    return directory


FOOD11_SPLITS = {"training": 4, "validation": 2, "evaluation": 2}
FOOD11_CLASSES = {"cat": "Bread", "coffee": "Dairy product", "rocket": "Rice"}


def food11_like(directory: Path, per_split: dict[str, int] = FOOD11_SPLITS) -> Path:
    """Small real photos laid out as Food-11 is: training/, validation/, evaluation/ holding class folders."""
    write_photo_dataset(directory, classes=tuple(FOOD11_CLASSES), splits=per_split, min_side=24, max_side=64)
    for split in per_split:
        for photo, food in FOOD11_CLASSES.items():
            (directory / split / photo).rename(directory / split / food)
    return directory
