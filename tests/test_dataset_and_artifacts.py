"""The labelled image folder format and atomic artifact writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from components.common.artifacts import atomic_directory
from components.common.dataset import DatasetFormatError, find_dataset_root, load_split


def make_dataset(root, rows, size=(4, 4), classes=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["filename,label,split"]
    for i, (label, split) in enumerate(rows):
        name = f"images/{i}.png"
        Image.fromarray(np.full(size, i * 10, dtype=np.uint8), mode="L").save(root / name)
        lines.append(f"{name},{label},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_loads_split_with_class_order_from_classes_txt(tmp_path):
    root = make_dataset(tmp_path / "d", [("b", "train"), ("a", "train"), ("b", "test")], classes=["b", "a"])
    train = load_split(tmp_path, "train")  # found below the given directory
    assert train.classes == ("b", "a")
    assert train.labels.tolist() == [0, 1]
    assert train.images.shape == (2, 1, 4, 4) and train.images.dtype.is_floating_point is False
    assert find_dataset_root(tmp_path) == root


def test_missing_column_is_named(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,label\nx.png,a\n")
    with pytest.raises(DatasetFormatError, match=r"lacks the column\(s\) split"):
        load_split(tmp_path, "train")


def test_unknown_split_value_is_named(tmp_path):
    make_dataset(tmp_path, [("a", "train"), ("b", "validation")])
    with pytest.raises(DatasetFormatError, match=r"line 3: split 'validation' is not one of train, test"):
        load_split(tmp_path, "train")


def test_missing_and_broken_images_are_named(tmp_path):
    make_dataset(tmp_path, [("a", "train"), ("b", "train")])
    (tmp_path / "images/1.png").write_text("not an image")
    with pytest.raises(DatasetFormatError, match=r"1.png is not a readable PNG or JPEG image"):
        load_split(tmp_path, "train")
    (tmp_path / "images/1.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"1.png is listed in labels.csv but does not exist"):
        load_split(tmp_path, "train")


def test_mixed_image_sizes_are_rejected(tmp_path):
    make_dataset(tmp_path, [("a", "train"), ("b", "train")])
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8), mode="L").save(tmp_path / "images/1.png")
    with pytest.raises(DatasetFormatError, match=r"images/1.png: image shape \(5, 5, 1\) differs"):
        load_split(tmp_path, "train")


def test_no_labels_file(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"no labels.csv found under"):
        load_split(tmp_path, "train")


def test_atomic_directory_publishes_only_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []

    with atomic_directory(target) as staging:
        (staging / "whole.bin").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["whole.bin"]

    with atomic_directory(target) as staging:  # a retry replaces the earlier result whole
        (staging / "new.bin").write_bytes(b"y")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
