"""Dataset layouts (labels.csv, class folders with or without split folders) and the hash split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.dataset import DatasetFormatError, SplitRule, hash_fraction, index_dataset


def image(path: Path, value: int = 0, size=(6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)
    return path


def labels_csv(root: Path, rows: list[tuple[str, str, str]], header: str = "filename,label,split") -> Path:
    for name, _, *_ in rows:
        image(root / name)
    body = "\n".join(",".join(row) for row in rows)
    (root / "labels.csv").write_text(f"{header}\n{body}\n")
    return root


def class_folders(root: Path, counts: dict[str, int], split: str = "") -> Path:
    for name, count in counts.items():
        for i in range(count):
            image(root / split / name / f"{name}_{i:03d}.png", i)
    return root


def paths(index, split):
    return [s.path for s in index.samples(split)]


# --- labels.csv ---------------------------------------------------------------------------------------


def test_labels_csv_keeps_given_splits_and_carves_validation_from_train(tmp_path):
    rows = [(f"img/{i}.png", "ab"[i % 2], "test" if i < 4 else "train") for i in range(40)]
    index = index_dataset(labels_csv(tmp_path / "data", rows), SplitRule(validation_fraction=0.25))
    assert index.layout == "labels.csv" and index.classes == ("a", "b")
    assert paths(index, "test") == sorted(f"img/{i}.png" for i in range(4))  # given: never carved
    assert index.given == ("train", "test")
    val = paths(index, "val")
    assert val and all(hash_fraction("val", p) < 0.25 for p in val)
    assert len(paths(index, "train")) + len(val) == 36


def test_labels_csv_without_split_column_is_split_by_hash(tmp_path):
    rows = [(f"img/{i}.png", "ab"[i % 2]) for i in range(200)]
    index = index_dataset(labels_csv(tmp_path, rows, header="filename,label"))
    assert index.given == ()
    test = paths(index, "test")
    assert test == sorted(p for p, _ in rows if hash_fraction("test", p) < 0.2)
    assert 20 < len(test) < 60  # about a fifth


def test_dataset_is_found_below_the_given_directory_and_classes_txt_orders_classes(tmp_path):
    root = labels_csv(tmp_path / "data/raw", [("x.png", "b", "train"), ("y.png", "a", "train"), ("z.png", "b", "test")])
    (root / "classes.txt").write_text("b\na\n")
    index = index_dataset(tmp_path)  # dvc_pull's Dataset keeps the repository's paths
    assert index.root == root and index.classes == ("b", "a")
    assert [(s.path, s.label) for s in index.samples("train")] == [("x.png", 0), ("y.png", 1)]


@pytest.mark.parametrize(
    "name, message",
    [
        ("../outside.png", r"must be a path relative to the dataset directory, without '\.\.'"),
        ("img/../../outside.png", r"without '\.\.'"),
        ("/etc/passwd", r"must be a path relative"),
        ("", r"is empty"),
    ],
)
def test_labels_csv_paths_cannot_leave_the_dataset(tmp_path, name, message):
    root = labels_csv(tmp_path / "d", [("a.png", "a", "train"), ("b.png", "b", "train")])
    image(tmp_path / "outside.png")
    (root / "labels.csv").write_text(f"filename,label,split\na.png,a,train\nb.png,b,train\n{name},a,train\n")
    with pytest.raises(DatasetFormatError, match=message):
        index_dataset(root)


@pytest.mark.parametrize(
    "csv, message",
    [
        ("name,label\nx.png,a\n", r"lacks the column\(s\) filename"),
        ("filename,label,split\na.png,a,train\nb.png,b,holdout\n", r"line 3: split 'holdout' is not one of"),
        ("filename,label,split\na.png,a,train\nmissing.png,b,train\n", r"missing.png is listed in labels.csv but"),
        ("filename,label,split\na.png,a,train\na.png,b,train\n", r"a.png is listed twice"),
        ("filename,label,split\na.png,a,train\nb.png,a,train\n", r"has 1 class\(es\) \(a\); at least 2"),
    ],
)
def test_bad_labels_csv_is_named(tmp_path, csv, message):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DatasetFormatError, match=message):
        index_dataset(tmp_path)


# --- class folders ------------------------------------------------------------------------------------


def test_class_folders_without_splits_are_split_by_hash(tmp_path):
    root = class_folders(tmp_path / "repo/data/food", {"bread": 30, "dessert": 30, "soup": 30})
    (root / "soup" / "notes.txt").write_text("not an image")  # ignored, as ImageFolder ignores it
    index = index_dataset(tmp_path / "repo")
    assert index.root == root and index.layout == "class-folders"
    assert index.classes == ("bread", "dessert", "soup")
    everything = sorted(p for split in ("train", "val", "test") for p in paths(index, split))
    assert len(everything) == 90 and "soup/notes.txt" not in everything
    assert paths(index, "test") == sorted(p for p in everything if hash_fraction("test", p) < 0.2)


def test_the_hash_split_is_pinned_by_fixed_assignments(tmp_path):
    """Fixed expectations, not ones computed with hash_fraction: a change to the rule (the hash, its input,
    the order of the carve-outs, < or <=) moves files between splits and fails here, as it would move
    a model's test images away from what evaluate and the served model were checked on."""
    assert hash_fraction("test", "bread/bread_000.png") == 0.8816617031658778
    assert hash_fraction("val", "soup/soup_004.png") == 0.008128390862703628
    root = class_folders(tmp_path, {"bread": 20, "soup": 20})
    index = index_dataset(root)
    assert paths(index, "test") == ["bread/bread_002.png", "bread/bread_016.png", "soup/soup_014.png"]
    assert paths(index, "val") == ["soup/soup_004.png", "soup/soup_008.png", "soup/soup_009.png"]
    assert len(paths(index, "train")) == 34
    wider = index_dataset(root, SplitRule(test_fraction=0.5, validation_fraction=0.25))
    assert paths(wider, "val") == [
        "bread/bread_000.png",
        "bread/bread_004.png",
        "bread/bread_005.png",
        "bread/bread_015.png",
    ]
    assert paths(wider, "test")[:4] == [
        "bread/bread_002.png",
        "bread/bread_009.png",
        "bread/bread_010.png",
        "bread/bread_011.png",
    ]
    assert len(paths(wider, "test")) == 22  # soup_004 is in test: the test carve-out comes first


def test_a_file_never_changes_split_when_the_dataset_grows(tmp_path):
    root = class_folders(tmp_path, {"a": 40, "b": 40})
    before = {s: set(paths(index_dataset(root), s)) for s in ("train", "val", "test")}
    class_folders(tmp_path, {"a": 80, "b": 80, "c": 20})  # more files, and a new class
    after = {s: set(paths(index_dataset(root), s)) for s in ("train", "val", "test")}
    for split in before:
        assert before[split] <= after[split], split


@pytest.mark.parametrize(
    "folders, given",
    [
        (("train", "val", "test"), ("train", "val", "test")),
        (("training", "validation", "evaluation"), ("train", "val", "test")),  # Food-11's names
        (("train", "test"), ("train", "test")),
    ],
)
def test_split_folders_are_kept(tmp_path, folders, given):
    for folder in folders:
        class_folders(tmp_path, {"cat": 5, "dog": 5}, split=folder)
    index = index_dataset(tmp_path)
    assert index.given == given
    assert all(p.startswith(folders[-1] + "/") for p in paths(index, "test"))
    assert len(paths(index, "test")) == 10
    if "val" not in given:  # carved from train by hash
        assert all(p.startswith(folders[0] + "/") for p in paths(index, "val"))


def test_split_record_lets_evaluate_repeat_the_split(tmp_path):
    root = class_folders(tmp_path, {"a": 50, "b": 50})
    rule = SplitRule(test_fraction=0.3, validation_fraction=0.2)
    record = index_dataset(root, rule).split_record()
    again = index_dataset(root, SplitRule.from_record(record))
    assert paths(again, "test") == paths(index_dataset(root, rule), "test")
    assert record["counts"]["test"] == len(paths(again, "test"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r: (class_folders(r, {"a": 3}), (r / "empty").mkdir()), r"class folder .*empty has no images"),
        (lambda r: class_folders(r / "only", {"cats": 4}), r"single class \('cats'\): at least 2 classes"),
        (lambda r: class_folders(r, {"cats": 4}), r"single class \('cats'\)"),
        (lambda r: image(r / "loose.png"), r"holds image files directly"),
        (lambda r: (class_folders(r, {"a": 2}, "train"), class_folders(r, {"b": 2})), r"mixes split folders"),
        (lambda r: None, r"no dataset found under"),
    ],
)
def test_bad_class_folders_are_named(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DatasetFormatError, match=message):
        index_dataset(tmp_path)


def test_a_class_without_training_images_is_named(tmp_path):
    class_folders(tmp_path, {"a": 4, "b": 4}, split="train")
    class_folders(tmp_path, {"a": 2, "b": 2, "c": 2}, split="test")
    with pytest.raises(DatasetFormatError, match=r"class\(es\) 'c' have no images in the train split"):
        index_dataset(tmp_path)


def test_classes_txt_must_match_the_folders(tmp_path):
    class_folders(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "classes.txt").write_text("b\nc\n")
    with pytest.raises(DatasetFormatError, match=r"folders not listed: a; listed without a folder: c"):
        index_dataset(tmp_path)


@pytest.mark.parametrize(
    "rule, message",
    [
        (SplitRule(test_fraction=1.0), r"test_fraction must be a number in \[0, 1\), got 1.0"),
        (SplitRule(validation_fraction=-0.1), r"validation_fraction must be a number in \[0, 1\)"),
        (SplitRule(0.6, 0.5), r"test_fraction \+ validation_fraction must be below 1"),
    ],
)
def test_bad_split_rule_is_named(tmp_path, rule, message):
    with pytest.raises(ValueError, match=message):
        index_dataset(class_folders(tmp_path, {"a": 2, "b": 2}), rule)
