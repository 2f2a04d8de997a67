"""Data for local runs, versioned with DVC in a throwaway git repository with a local DVC remote.

The pipeline reads data only from a git repository that tracks it with DVC, so a local run
puts its data there first, and the run's lineage (the data's commit) is the same as on a cluster.

- ``prepare_digits_repo`` (``make run``'s default data): scikit-learn's 1,797 8x8 digits,
  written once as PNG files plus ``labels.csv`` into ``data/raw``; the ``split`` column fixes a
  stratified 80/20 train/test split. A second call reuses the repository and remote as they are.
- ``prepare_folder_repo`` (``kfp-torch local --data DIR``): a copy of your own dataset directory
  in a repository of its own (one per source directory), beside a DVC remote shared by all of them.
  A later call compares the directory with the copy file by file, by content: unchanged, the
  repository's commit is reused; changed, the copy is brought up to date and committed anew.

``DemoRepo.status`` says which happened (``created``, ``unchanged`` or ``updated``).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

DATA_PATH = "data/raw"
TEST_FRACTION = 0.2
SPLIT_SEED = 20261125
REMOTE_NAME = "storage"
CREATED, UNCHANGED, UPDATED = "created", "unchanged", "updated"
# The folder repositories' workspaces are hard links into the DVC cache: one copy of your data fewer.
FOLDER_CACHE_TYPE = "reflink,hardlink,copy"
COMPARE_CHUNK = 1 << 20


@dataclass(frozen=True)
class DemoRepo:
    """A git repository that tracks ``data_path`` with DVC, pushed to ``remote_dir``, at ``commit``."""

    repo_url: str
    remote_dir: Path
    data_path: str
    commit: str
    # What this call did, and how the data changed; not part of the repository's identity.
    status: str = field(default=UNCHANGED, compare=False)
    changes: str = field(default="", compare=False)

    def describe(self) -> str:
        """One line for the terminal: where the data is versioned, and whether this run made a commit."""
        what = {
            CREATED: "new repository",
            UNCHANGED: "unchanged, commit reused",
            UPDATED: f"changed ({self.changes}), committed anew" if self.changes else "changed, committed anew",
        }[self.status]
        return (
            f"{self.repo_url} @ {self.commit[:12]} ({what}), {self.data_path} tracked by DVC, remote {self.remote_dir}"
        )


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


def _is_complete(repo: Path, data_path: str) -> bool:
    """Whether ``repo`` has a commit tracking ``data_path``: a first run that was interrupted has none."""
    if not (repo / f"{data_path}.dvc").is_file():
        return False
    try:
        return bool(git("ls-files", "--", f"{data_path}.dvc", cwd=repo))
    except RuntimeError:  # not a git repository, or one without a commit
        return False


def _init_repo(repo: Path, remote: Path, cache_type: str | None = None) -> None:
    """A new git repository with DVC initialised and ``remote`` as its default remote (a half-made one is replaced)."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    remote.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", "--initial-branch=main", cwd=repo)
    dvc("init", "--quiet", cwd=repo)
    dvc("remote", "add", "--default", REMOTE_NAME, str(remote), cwd=repo)
    if cache_type:
        dvc("config", "cache.type", cache_type, cwd=repo)


def _commit_data(repo: Path, data_path: str, message: str) -> bool:
    """``dvc add`` the data, commit what changed; True when a commit was made (the data's hash changed)."""
    dvc("add", "--quiet", data_path, cwd=repo)
    git("add", "--all", cwd=repo)
    if not git("status", "--porcelain", cwd=repo):
        return False
    git("commit", "--quiet", "-m", message, cwd=repo)
    return True


def _tracked(repo: Path, remote: Path, data_path: str, status: str, changes: str = "") -> DemoRepo:
    dvc("push", "--quiet", cwd=repo)  # a no-op when the remote already holds everything
    return DemoRepo(
        repo_url=str(repo),
        remote_dir=remote,
        data_path=data_path,
        commit=git("rev-parse", "HEAD", cwd=repo),
        status=status,
        changes=changes,
    )


def prepare_digits_repo(workdir: str | Path) -> DemoRepo:
    """Create (or reuse) ``workdir/digits-repo`` and its DVC remote ``workdir/dvc-remote``."""
    workdir = Path(workdir).resolve()
    repo = workdir / "digits-repo"
    remote = workdir / "dvc-remote"
    status = UNCHANGED
    if not _is_complete(repo, DATA_PATH):
        _init_repo(repo, remote)
        write_digits(repo / DATA_PATH)
        _commit_data(repo, DATA_PATH, "Add the scikit-learn digits as PNG files, tracked by DVC")
        status = CREATED
    return _tracked(repo, remote, DATA_PATH, status)


@dataclass
class Changes:
    """How a mirrored copy differed from its source: files added, changed (by content) and removed."""

    added: int = 0
    changed: int = 0
    removed: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def __str__(self) -> str:
        counts = (("added", self.added), ("changed", self.changed), ("removed", self.removed))
        return ", ".join(f"{n} file{'s' if n != 1 else ''} {what}" for what, n in counts if n) or "no file changed"


def visible_files(directory: Path) -> list[str]:
    """Every file below ``directory`` as a '/'-separated relative path, sorted; hidden entries
    (``.git``, ``.DS_Store``, ...) are skipped, folder links followed once."""
    found, seen = [], set()
    for current, subdirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:  # a link back up the tree
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        base = Path(current).relative_to(directory)
        found += [(base / name).as_posix() for name in names if not name.startswith(".")]
    return sorted(found)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            chunk = left.read(COMPARE_CHUNK)
            if chunk != right.read(COMPARE_CHUNK):
                return False
            if not chunk:
                return True


def mirror(source: Path, target: Path) -> Changes:
    """Make ``target`` hold exactly ``source``'s visible files, copying only what differs in content."""
    changes = Changes()
    wanted = visible_files(source)
    if target.is_dir():
        keep = set(wanted)
        for relative in visible_files(target):
            if relative not in keep:
                (target / relative).unlink()
                changes.removed += 1
        for current, _, _ in os.walk(target, topdown=False):
            if current != str(target) and not os.listdir(current):
                os.rmdir(current)
    for relative in wanted:
        origin, copy = source / relative, target / relative
        if copy.is_file():
            if _same_content(origin, copy):
                continue
            changes.changed += 1
            copy.unlink()  # DVC leaves linked workspace files read-only
        else:
            changes.added += 1
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, copy)
    return changes


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "dataset"


def folder_repo(source: str | Path, workdir: str | Path) -> Path:
    """Where ``prepare_folder_repo`` versions ``source``: ``workdir/<its name>-<hash of its absolute path>``.

    ``ValueError`` when the two overlap (a copy of a folder inside itself).
    """
    source = Path(source).expanduser().resolve()
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:8]
    repo = Path(workdir).resolve() / f"{safe_name(source.name)}-{digest}"
    for inside, outside in ((repo, source), (source, repo)):
        if inside == outside or outside in inside.parents:
            raise ValueError(
                f"{source} and the repository that versions it ({repo}) overlap; "
                "keep the dataset directory outside --workdir"
            )
    return repo


def prepare_folder_repo(source: str | Path, workdir: str | Path) -> DemoRepo:
    """Track a copy of the directory ``source`` with DVC in ``folder_repo(source, workdir)``, pushed to
    ``workdir/dvc-remote``; reuse the commit when the copy already holds the same content."""
    repo = folder_repo(source, workdir)
    source = Path(source).expanduser().resolve()
    remote = Path(workdir).resolve() / "dvc-remote"
    data_path = f"data/{safe_name(source.name)}"
    if not _is_complete(repo, data_path):
        _init_repo(repo, remote, FOLDER_CACHE_TYPE)
        mirror(source, repo / data_path)
        _commit_data(repo, data_path, f"Add {source}, tracked by DVC")
        status, changes = CREATED, ""
    else:
        found = mirror(source, repo / data_path)
        # Decided by DVC's hash of the copy, which also catches an update an interrupted run left uncommitted.
        committed = _commit_data(repo, data_path, f"Update {source}: {found}")
        status, changes = (UPDATED if committed else UNCHANGED), (str(found) if found else "")
    if status != UNCHANGED:
        dvc("checkout", "--relink", "--quiet", data_path, cwd=repo)  # `dvc add` leaves copies; link them to the cache
    return _tracked(repo, remote, data_path, status, changes)
