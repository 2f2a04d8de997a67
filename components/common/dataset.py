"""Image classification datasets in the two layouts people keep them in, and how they split.

A dataset directory (found under the given path: a ``dvc_pull`` Dataset keeps
the repository's paths, e.g. ``data/raw``) is one of:

- **labels.csv**: columns ``filename`` and ``label``, optionally ``split``;
  the files it names (PNG or JPEG) lie under the directory.
- **class folders**: ``<class>/<file>`` (files may sit deeper inside a class
  folder), optionally under split folders: ``train/`` (or ``training/``),
  ``val/`` (``valid/``, ``validation/``), ``test/`` (``testing/``, ``evaluation/``).
  Files other than .png, .jpg and .jpeg are ignored, as torchvision's
  ``ImageFolder`` ignores them.

``classes.txt`` beside them, one name per line, fixes the class order;
without it classes are sorted by name.

**Splits.** A split the data names is kept as it is. A split it does not name
is carved from the files in ``train`` or in no split, by a hash of each file's
path relative to the dataset directory: ``test`` takes the files whose
``sha256("test:" + path)`` falls below ``test_fraction``, ``val`` then those
whose ``sha256("val:" + path)`` falls below ``validation_fraction``. A file
therefore never moves between splits when the dataset grows. The rule is
recorded in the Model's ``spec.json``, and evaluate applies the same one.

Torch-free; nothing here decodes pixels (see ``components.common.images``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from components.common.images import is_image_file

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "evaluation": "test",
}
REQUIRED_COLUMNS = ("filename", "label")
LAYOUT_LABELS_CSV = "labels.csv"
LAYOUT_CLASS_FOLDERS = "class-folders"


class DatasetFormatError(ValueError):
    """The dataset directory does not follow a layout this library reads; the message says how."""


@dataclass(frozen=True)
class SplitRule:
    """How files the data puts in no split (or in ``train``) are carved into test and validation."""

    test_fraction: float = 0.2
    validation_fraction: float = 0.1

    def validate(self) -> None:
        for name in ("test_fraction", "validation_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if self.test_fraction + self.validation_fraction >= 1:
            raise ValueError(
                f"test_fraction + validation_fraction must be below 1 (some files must be left to train on), "
                f"got {self.test_fraction} + {self.validation_fraction}"
            )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SplitRule:
        return cls(
            test_fraction=record.get("test_fraction", cls.test_fraction),
            validation_fraction=record.get("validation_fraction", cls.validation_fraction),
        )


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the dataset directory, '/'-separated
    label: int  # index into the classes


@dataclass
class DatasetIndex:
    root: Path
    layout: str
    classes: tuple[str, ...]
    splits: dict[str, tuple[Sample, ...]]  # "train", "val", "test"
    given: tuple[str, ...]  # the splits the data itself names
    rule: SplitRule

    def samples(self, split: str) -> tuple[Sample, ...]:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        return self.splits[split]

    def split_record(self) -> dict[str, Any]:
        """What ``spec.json`` records, so evaluate picks exactly the same test files."""
        return {
            "method": "given splits kept; the others carved by sha256 of the relative path",
            "layout": self.layout,
            "given": list(self.given),
            "test_fraction": self.rule.test_fraction,
            "validation_fraction": self.rule.validation_fraction,
            "counts": {split: len(self.splits[split]) for split in SPLITS},
        }


def hash_fraction(tag: str, relative_path: str) -> float:
    """A number in [0, 1) fixed by the file's relative path: its place in the hash split."""
    digest = hashlib.sha256(f"{tag}:{relative_path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def index_dataset(path: str | Path, rule: SplitRule = SplitRule()) -> DatasetIndex:
    """Find the dataset under ``path``, read its layout and split it; fail naming what is wrong."""
    rule.validate()
    root, layout = find_dataset_root(path)
    if layout == LAYOUT_LABELS_CSV:
        entries, classes = _read_labels_csv(root)
    else:
        entries, classes = _read_class_folders(root)
    given = tuple(split for split in SPLITS if any(split == g for _, _, g in entries))
    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for relative, label, given_split in entries:
        splits[_assign(relative, given_split, given, rule)].append(Sample(relative, label))
    index = DatasetIndex(
        root=root,
        layout=layout,
        classes=classes,
        splits={split: tuple(sorted(samples, key=lambda s: s.path)) for split, samples in splits.items()},
        given=given,
        rule=rule,
    )
    if not index.splits["train"]:
        raise DatasetFormatError(f"dataset {root} has no images in the train split")
    counts = Counter(sample.label for sample in index.splits["train"])
    missing = [name for i, name in enumerate(classes) if counts[i] == 0]
    if missing:
        raise DatasetFormatError(
            f"dataset {root}: class(es) {', '.join(map(repr, missing))} have no images in the train split"
        )
    return index


def _assign(relative: str, given_split: str | None, given: tuple[str, ...], rule: SplitRule) -> str:
    if given_split in ("val", "test"):
        return given_split
    if "test" not in given and hash_fraction("test", relative) < rule.test_fraction:
        return "test"
    if "val" not in given and hash_fraction("val", relative) < rule.validation_fraction:
        return "val"
    return "train"


def find_dataset_root(path: str | Path) -> tuple[Path, str]:
    """The dataset directory under ``path`` and its layout.

    ``labels.csv`` is looked for anywhere below and must be found once. Otherwise the
    class-folder layout: directories that hold nothing but one subdirectory (the
    repository path a ``dvc_pull`` Dataset keeps) are stepped through.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetFormatError(f"dataset path {path} is not a directory")
    if (path / LABELS_FILE).is_file():
        return path, LAYOUT_LABELS_CSV
    found = sorted(p.parent for p in path.rglob(LABELS_FILE))
    if len(found) > 1:
        raise DatasetFormatError(
            f"{len(found)} {LABELS_FILE} files found under {path} ({', '.join(map(str, found))}); "
            "pull or pass exactly one dataset directory"
        )
    if found:
        return found[0], LAYOUT_LABELS_CSV
    current = path
    while True:
        directories, files = _listing(current)
        if any(is_image_file(f) for f in files) or len(directories) != 1:
            break
        if directories[0].lower() in SPLIT_NAMES:
            break
        current = current / directories[0]
    directories, files = _listing(current)
    images = [f for f in files if is_image_file(f)]
    if images:
        hint = (
            f"; {current.parent} holds only this one folder, so the dataset has a single class "
            f"({current.name!r}): at least 2 classes are needed"
            if current != path
            else ""
        )
        raise DatasetFormatError(
            f"{current} holds image files directly ({images[0]}, ...): expected {LABELS_FILE} or one folder "
            f"per class (<class>/<file>), optionally under train/, val/ and test/{hint}"
        )
    if not directories:
        raise DatasetFormatError(
            f"no dataset found under {path}: expected {LABELS_FILE} (columns filename, label[, split]) "
            "or one folder per class (<class>/<file>), optionally under train/, val/ and test/"
        )
    return current, LAYOUT_CLASS_FOLDERS


def _listing(directory: Path) -> tuple[list[str], list[str]]:
    """Visible subdirectories and files of ``directory``, sorted (hidden entries are ignored)."""
    directories, files = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            (directories if entry.is_dir() else files).append(entry.name)
    return sorted(directories), sorted(files)


def _read_classes_file(root: Path) -> tuple[str, ...] | None:
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    duplicated = sorted(name for name, n in Counter(names).items() if n > 1)
    if duplicated:
        raise DatasetFormatError(f"{path} lists class(es) {', '.join(duplicated)} more than once")
    return tuple(names)


def _check_class_count(root: Path, classes: tuple[str, ...]) -> None:
    if len(classes) < 2:
        raise DatasetFormatError(
            f"dataset {root} has {len(classes)} class(es) ({', '.join(classes) or 'none'}); at least 2 are needed"
        )


def _safe_relative(name: str, where: str) -> str:
    """A relative path inside the dataset directory, '/'-separated; anything that could leave it is refused."""
    if not name or "\x00" in name or "\\" in name:
        raise DatasetFormatError(f"{where}: file name {name!r} is empty or holds a NUL or backslash")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise DatasetFormatError(
            f"{where}: file name {name!r} must be a path relative to the dataset directory, without '..'"
        )
    return pure.as_posix()


def _read_labels_csv(root: Path) -> tuple[list[tuple[str, int, str | None]], tuple[str, ...]]:
    path = root / LABELS_FILE
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetFormatError(
                f"{path} lacks the column(s) {', '.join(missing)}; expected filename, label and optionally split, "
                f"found {', '.join(columns) or 'no header'}"
            )
        rows = list(reader)
    has_split = "split" in columns
    classes = _read_classes_file(root) or tuple(sorted({row["label"] for row in rows}))
    _check_class_count(root, classes)
    index = {name: i for i, name in enumerate(classes)}
    entries: list[tuple[str, int, str | None]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        relative = _safe_relative(row["filename"] or "", where)
        if relative in seen:
            raise DatasetFormatError(f"{where}: {relative} is listed twice")
        seen.add(relative)
        if row["label"] not in index:
            raise DatasetFormatError(f"{where}: label {row['label']!r} is not in {CLASSES_FILE} ({', '.join(classes)})")
        given_split = None
        if has_split and (row["split"] or "").strip():
            given_split = SPLIT_NAMES.get(row["split"].strip().lower())
            if given_split is None:
                raise DatasetFormatError(
                    f"{where}: split {row['split']!r} is not one of {', '.join(SPLIT_NAMES)} (or empty: carved by hash)"
                )
        if not (root / relative).is_file():
            raise DatasetFormatError(f"{where}: {root / relative} is listed in {LABELS_FILE} but does not exist")
        entries.append((relative, index[row["label"]], given_split))
    if not entries:
        raise DatasetFormatError(f"{path} lists no images")
    return entries, classes


def _read_class_folders(root: Path) -> tuple[list[tuple[str, int, str | None]], tuple[str, ...]]:
    directories, _ = _listing(root)
    split_dirs = [d for d in directories if d.lower() in SPLIT_NAMES]
    if split_dirs and len(split_dirs) != len(directories):
        others = [d for d in directories if d not in split_dirs]
        raise DatasetFormatError(
            f"{root} mixes split folders ({', '.join(split_dirs)}) with other folders ({', '.join(others)}); "
            "put every class folder under a split folder, or use no split folders"
        )
    mapped = Counter(SPLIT_NAMES[d.lower()] for d in split_dirs)
    twice = [split for split, n in mapped.items() if n > 1]
    if twice:
        raise DatasetFormatError(f"{root} has several folders for the {twice[0]} split ({', '.join(split_dirs)})")
    groups = [(root / d, SPLIT_NAMES[d.lower()]) for d in split_dirs] or [(root, None)]

    found: dict[str, list[tuple[str, str | None]]] = {}
    ignored: list[str] = []
    for base, split in groups:
        class_dirs, stray = _listing(base)
        if stray and split is not None:
            ignored += [f"{base.name}/{name}" for name in stray]
        for name in class_dirs:
            files = _files_under(base / name, root)
            images = [f for f in files if is_image_file(f)]
            ignored += [f for f in files if not is_image_file(f)]
            if not images:
                raise DatasetFormatError(
                    f"class folder {base / name} has no images (.png, .jpg or .jpeg); remove it or add images"
                )
            found.setdefault(name, []).extend((relative, split) for relative in images)
    if ignored:
        log.info(
            "ignored %d file(s) that are not .png/.jpg/.jpeg images (e.g. %s)", len(ignored), ", ".join(ignored[:3])
        )
    listed = _read_classes_file(root)
    if listed is not None:
        unknown = sorted(set(found) - set(listed))
        absent = [name for name in listed if name not in found]
        if unknown or absent:
            raise DatasetFormatError(
                f"{root / CLASSES_FILE} does not match the class folders: "
                + "; ".join(
                    part
                    for part in (
                        f"folders not listed: {', '.join(unknown)}" if unknown else "",
                        f"listed without a folder: {', '.join(absent)}" if absent else "",
                    )
                    if part
                )
            )
    classes = listed or tuple(sorted(found))
    _check_class_count(root, classes)
    label = {name: i for i, name in enumerate(classes)}
    entries = [(relative, label[name], split) for name in classes for relative, split in found[name]]
    return entries, classes


def _files_under(directory: Path, root: Path) -> list[str]:
    """Every visible file below ``directory`` as a path relative to ``root`` (symlinked folders not followed)."""
    files = []
    for current, subdirs, names in os.walk(directory):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        base = Path(current).relative_to(root).as_posix()
        files += [f"{base}/{name}" for name in sorted(names) if not name.startswith(".")]
    return files
