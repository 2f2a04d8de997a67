"""The default run's data: scikit-learn's 1,797 8x8 digits, versioned with DVC.

``prepare_digits_repo`` writes the digits once as PNG files plus
``labels.csv`` into ``data/raw`` of a throwaway git repository, tracks the
folder with DVC and pushes it to a local DVC remote. A second call reuses
both. The ``split`` column fixes a stratified 80/20 train/test split.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DATA_PATH = "data/raw"
TEST_FRACTION = 0.2
SPLIT_SEED = 20261125


@dataclass(frozen=True)
class DemoRepo:
    repo_url: str
    remote_dir: Path
    data_path: str
    commit: str


def write_digits(directory: str | Path) -> int:
    """Write the digits as ``images/NNNN.png``, ``labels.csv`` and ``classes.txt``; return the count."""
    from sklearn.datasets import load_digits  # only the demo needs scikit-learn

    digits = load_digits()
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)

    rng = np.random.default_rng(SPLIT_SEED)
    split = np.full(len(digits.target), "train", dtype=object)
    for label in np.unique(digits.target):
        members = rng.permutation(np.flatnonzero(digits.target == label))
        split[members[: int(round(len(members) * TEST_FRACTION))]] = "test"

    with open(directory / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label", "split"])
        for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            name = f"images/{i:04d}.png"
            Image.fromarray(image, mode="L").save(directory / name)
            writer.writerow([name, str(label), split[i]])
    (directory / "classes.txt").write_text("".join(f"{name}\n" for name in digits.target_names.astype(str)))
    return len(digits.target)


def _run(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@localhost",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@localhost",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def git(*args: str, cwd: Path) -> str:
    return _run(["git", *args], cwd)


def prepare_digits_repo(workdir: str | Path) -> DemoRepo:
    """Create (or reuse) ``workdir/digits-repo`` and its DVC remote ``workdir/dvc-remote``."""
    workdir = Path(workdir).resolve()
    repo = workdir / "digits-repo"
    remote = workdir / "dvc-remote"
    remote.mkdir(parents=True, exist_ok=True)
    if not (repo / f"{DATA_PATH}.dvc").is_file():
        if repo.exists():
            # A half-made repository from an interrupted first run: start again.
            import shutil

            shutil.rmtree(repo)
        repo.mkdir(parents=True)
        git("init", "--quiet", "--initial-branch=main", cwd=repo)
        dvc("init", "--quiet", cwd=repo)
        dvc("remote", "add", "--default", "storage", str(remote), cwd=repo)
        write_digits(repo / DATA_PATH)
        dvc("add", "--quiet", DATA_PATH, cwd=repo)
        git("add", "--all", cwd=repo)
        git("commit", "--quiet", "-m", "Add the scikit-learn digits as PNG files, tracked by DVC", cwd=repo)
    dvc("push", "--quiet", cwd=repo)  # a no-op when the remote already holds everything
    return DemoRepo(
        repo_url=str(repo),
        remote_dir=remote,
        data_path=DATA_PATH,
        commit=git("rev-parse", "HEAD", cwd=repo),
    )
