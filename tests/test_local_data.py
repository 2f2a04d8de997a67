"""`kfp-torch local --data DIR`: the folder is checked before anything runs, then versioned with DVC, by content."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.data_check import DatasetCheckError, check_dataset_directory
from pipelines.demo_data import CREATED, UNCHANGED, UPDATED, prepare_folder_repo, visible_files
from tests.support.photos import FOOD11_SPLITS, food11_like


@pytest.fixture
def photos(tmp_path) -> Path:
    return food11_like(tmp_path / "food-11")


def test_a_food11_like_folder_passes_the_check(photos):
    index = check_dataset_directory(photos)
    assert index.classes == ("Bread", "Dairy product", "Rice")
    assert {split: len(samples) for split, samples in index.splits.items()} == {"train": 12, "val": 6, "test": 6}


def first(directory: Path, pattern: str) -> Path:
    return sorted(directory.glob(pattern))[0]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: shutil.rmtree(d), r"{d} does not exist; expected one folder per class"),
        (lambda d: shutil.rmtree(d) or d.write_text("x"), r"{d} is not a directory; expected one folder per class"),
        (
            lambda d: [
                shutil.rmtree(d / split / "Rice") or shutil.rmtree(d / split / "Bread") for split in FOOD11_SPLITS
            ],
            r"dataset {d} has 1 class\(es\) \(Dairy product\); at least 2 are needed",
        ),
        (
            lambda d: [p.unlink() for p in (d / "validation" / "Rice").iterdir()],
            r"class folder {d}/validation/Rice has no images \(.png, .jpg or .jpeg\); remove it or add images",
        ),
        (
            lambda d: first(d, "training/Bread/*.jpg").write_bytes(
                first(d, "training/Bread/*.jpg").read_bytes()[:-400]
            ),
            r"1 of 24 images under {d} cannot be read \(fix or remove them\): {d}/training/Bread/\S+\.jpg cannot be "
            r"decoded: image file is truncated",
        ),
        (
            lambda d: first(d, "evaluation/Rice/*.png").write_bytes(
                first(d, "evaluation/Rice/*.png").read_bytes()[:-30]
            ),
            r"1 of 24 images under {d} cannot be read .*: {d}/evaluation/Rice/\S+\.png cannot be decoded",
        ),
        (
            lambda d: (d / "training" / "Rice" / "notes.png").write_text("not an image"),
            r"1 of 25 images .*: {d}/training/Rice/notes.png is not a readable PNG or JPEG image",
        ),
    ],
    ids=["missing", "a file", "one class", "empty class", "truncated jpeg", "truncated png", "not an image"],
)
def test_a_bad_folder_is_one_line_naming_it_and_what_was_expected(photos, damage, expected):
    import re

    damage(photos)
    with pytest.raises(DatasetCheckError) as raised:
        check_dataset_directory(photos)
    message = str(raised.value)
    assert re.search(expected.format(d=re.escape(str(photos))), message), message
    assert "\n" not in message


def test_a_bad_folder_is_refused_before_anything_is_versioned(photos, tmp_path, capsys):
    shutil.rmtree(photos / "training" / "Rice")
    (photos / "training" / "Rice").mkdir()
    assert main(["local", "--workdir", str(tmp_path / "work"), "--data", str(photos), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"kfp-torch: error: --data: class folder {photos}/training/Rice has no images (.png, .jpg or .jpeg); "
        "remove it or add images\n"
    )
    assert not (tmp_path / "work").exists()


def test_a_folder_holding_the_workdir_is_refused(photos, tmp_path, capsys):
    assert main(["local", "--workdir", str(photos / "work"), "--data", str(photos)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kfp-torch: error: --data: {photos} and the repository that versions it ({photos}/work/")
    assert err.endswith("overlap; keep the dataset directory outside --workdir\n")
    assert not (photos / "work").exists()


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def dvc_tracked_files(repo: str, data_path: str, tmp_path: Path) -> dict[str, bytes]:
    """The files of ``data_path`` at the repository's HEAD, as a fresh clone pulls them from the DVC remote."""
    clone = tmp_path / f"clone-{git(repo, 'rev-parse', 'HEAD')[:8]}"
    subprocess.run(["git", "clone", "--quiet", repo, str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "pull", "--quiet", data_path], cwd=clone, check=True)
    root = clone / data_path
    return {relative: (root / relative).read_bytes() for relative in visible_files(root)}


def contents(directory: Path) -> dict[str, bytes]:
    return {relative: (directory / relative).read_bytes() for relative in visible_files(directory)}


def test_the_folder_is_versioned_once_and_recommitted_only_when_its_content_changes(photos, tmp_path):
    workdir = tmp_path / "work"
    (photos / ".DS_Store").write_bytes(b"finder")  # hidden files are not data
    created = prepare_folder_repo(photos, workdir)
    assert created.status == CREATED and created.data_path == "data/food-11"
    assert Path(created.repo_url).parent == workdir and Path(created.repo_url).name.startswith("food-11-")
    assert "new repository" in created.describe()
    source = contents(photos)
    assert ".DS_Store" not in source
    assert dvc_tracked_files(created.repo_url, created.data_path, tmp_path) == source

    again = prepare_folder_repo(photos, workdir)
    assert (again.status, again.commit) == (UNCHANGED, created.commit)
    assert "unchanged, commit reused" in again.describe()

    # Same size, same modification time, other bytes: told apart by content.
    changed = first(photos, "training/Bread/*.png")
    stat = changed.stat()
    data = bytearray(changed.read_bytes())
    data[-20] ^= 0xFF  # inside the IEND chunk's neighbourhood: the file size stays
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    shutil.copy(first(photos, "training/Rice/*.jpg"), photos / "training" / "Rice" / "new.jpg")
    first(photos, "validation/Bread/*").unlink()
    updated = prepare_folder_repo(photos, workdir)
    assert updated.status == UPDATED and updated.commit != created.commit
    assert updated.changes == "1 file added, 1 file changed, 1 file removed"
    assert f"changed ({updated.changes}), committed anew" in updated.describe()
    assert git(updated.repo_url, "log", "-1", "--format=%s") == f"Update {photos}: {updated.changes}"
    assert dvc_tracked_files(updated.repo_url, updated.data_path, tmp_path) == contents(photos)

    assert prepare_folder_repo(photos, workdir).status == UNCHANGED


def test_an_update_an_interrupted_run_left_uncommitted_is_committed(photos, tmp_path):
    workdir = tmp_path / "work"
    created = prepare_folder_repo(photos, workdir)
    # The copy was brought up to date, then the run stopped before `dvc add` and the commit.
    extra = Path(created.repo_url) / created.data_path / "training" / "Rice" / "new.jpg"
    shutil.copy(first(photos, "training/Rice/*.jpg"), photos / "training" / "Rice" / "new.jpg")
    shutil.copy(photos / "training" / "Rice" / "new.jpg", extra)
    resumed = prepare_folder_repo(photos, workdir)
    assert resumed.status == UPDATED and resumed.commit != created.commit


def test_a_half_made_repository_is_made_again(photos, tmp_path):
    workdir = tmp_path / "work"
    created = prepare_folder_repo(photos, workdir)
    shutil.rmtree(Path(created.repo_url) / ".git")  # as if the first run died before its commit
    remade = prepare_folder_repo(photos, workdir)
    assert remade.status == CREATED
    assert dvc_tracked_files(remade.repo_url, remade.data_path, tmp_path) == contents(photos)


def test_two_folders_of_the_same_name_get_a_repository_each(tmp_path):
    one = food11_like(tmp_path / "a" / "photos", {"training": 3})
    two = food11_like(tmp_path / "b" / "photos", {"training": 4})
    first_repo = prepare_folder_repo(one, tmp_path / "work")
    second_repo = prepare_folder_repo(two, tmp_path / "work")
    assert first_repo.repo_url != second_repo.repo_url and first_repo.remote_dir == second_repo.remote_dir
    assert prepare_folder_repo(one, tmp_path / "work").status == UNCHANGED
