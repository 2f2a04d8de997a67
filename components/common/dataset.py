"""The labelled image folder format that train and evaluate consume.

A dataset directory holds ``labels.csv`` with the columns ``filename``,
``label`` and ``split`` (``train`` or ``test``), the image files it names
(PNG or JPEG, all the same size and mode) and, optionally, ``classes.txt``
with one class name per line to fix the class order. Without it, classes are
the sorted distinct labels. The ``split`` column is versioned with the data,
so the test split is fixed and never seen in training.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LABELS_FILE = "labels.csv"
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "test")
REQUIRED_COLUMNS = ("filename", "label", "split")


class DatasetFormatError(ValueError):
    """The dataset directory does not follow the labelled image folder format."""


@dataclass(frozen=True)
class LabelledImages:
    """Decoded images of one split, ready for PyTorch."""

    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64 class indices, N
    classes: tuple[str, ...]
    filenames: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def find_dataset_root(path: str | Path) -> Path:
    """Return the directory under ``path`` that holds ``labels.csv``.

    A ``Dataset`` artifact from ``dvc_pull`` keeps the repository layout (for
    example ``data/raw/labels.csv``), so the file is looked for recursively; it
    must be found exactly once.
    """
    path = Path(path)
    if (path / LABELS_FILE).is_file():
        return path
    found = sorted(p.parent for p in path.rglob(LABELS_FILE))
    if not found:
        raise DatasetFormatError(
            f"no {LABELS_FILE} found under {path}: a dataset directory needs {LABELS_FILE} "
            f"with the columns {', '.join(REQUIRED_COLUMNS)}"
        )
    if len(found) > 1:
        raise DatasetFormatError(
            f"{len(found)} {LABELS_FILE} files found under {path} ({', '.join(map(str, found))}); "
            "pull or pass exactly one dataset directory"
        )
    return found[0]


def _read_rows(root: Path) -> list[dict[str, str]]:
    with open(root / LABELS_FILE, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetFormatError(
                f"{root / LABELS_FILE} lacks the column(s) {', '.join(missing)}; "
                f"expected {', '.join(REQUIRED_COLUMNS)}, found {', '.join(reader.fieldnames or [])}"
            )
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS:
            raise DatasetFormatError(
                f"{root / LABELS_FILE} line {line}: split {row['split']!r} is not one of {', '.join(SPLITS)}"
            )
    return rows


def read_classes(root: Path, rows: list[dict[str, str]] | None = None) -> tuple[str, ...]:
    classes_file = root / CLASSES_FILE
    if classes_file.is_file():
        classes = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    else:
        rows = rows if rows is not None else _read_rows(root)
        classes = tuple(sorted({row["label"] for row in rows}))
    if len(classes) < 2:
        raise DatasetFormatError(f"dataset {root} has {len(classes)} class(es); at least 2 are needed")
    return classes


def load_split(dataset_dir: str | Path, split: str) -> LabelledImages:
    """Decode every image of ``split`` ("train" or "test") into one uint8 tensor."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    root = find_dataset_root(dataset_dir)
    rows = _read_rows(root)
    classes = read_classes(root, rows)
    index = {name: i for i, name in enumerate(classes)}
    selected = [row for row in rows if row["split"] == split]
    if not selected:
        raise DatasetFormatError(f"dataset {root} has no rows in the {split!r} split")

    arrays, labels = [], []
    first_shape = None
    for row in selected:
        if row["label"] not in index:
            raise DatasetFormatError(
                f"{row['filename']}: label {row['label']!r} is not in {CLASSES_FILE} ({', '.join(classes)})"
            )
        array = _decode(root / row["filename"])
        if first_shape is None:
            first_shape = array.shape
        elif array.shape != first_shape:
            raise DatasetFormatError(
                f"{row['filename']}: image shape {array.shape} differs from {first_shape} "
                f"(of {selected[0]['filename']}); all images must share size and mode"
            )
        arrays.append(array)
        labels.append(index[row["label"]])
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=classes,
        filenames=tuple(row["filename"] for row in selected),
    )


def _decode(path: Path) -> np.ndarray:
    """Decode one image to an H x W x C uint8 array (C is 1 for grayscale, 3 for colour)."""
    try:
        with Image.open(path) as image:
            image = image.convert("L") if image.mode in ("L", "1", "I;16", "I") else image.convert("RGB")
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path} is listed in {LABELS_FILE} but does not exist") from None
    except OSError as error:
        raise DatasetFormatError(f"{path} is not a readable PNG or JPEG image: {error}") from None
    return array[:, :, None] if array.ndim == 2 else array
