"""Read and write artifact directories by URI: a local path, or an object-store URI (gs://…).

Pods that KFP does not launch itself (PyTorchJob replicas) get artifact URIs,
not the local paths KFP's launcher provides, so they fetch inputs and publish
outputs here.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit


def is_remote(uri: str) -> bool:
    return urlsplit(str(uri)).scheme not in ("", "file")


def _filesystem(uri: str):
    import fsspec

    return fsspec.filesystem(urlsplit(uri).scheme)


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding what ``uri`` holds: a directory or a single file (the path itself when local)."""
    if not is_remote(uri):
        yield Path(urlsplit(str(uri)).path if str(uri).startswith("file:") else uri)
        return
    fs = _filesystem(uri)
    with tempfile.TemporaryDirectory(prefix="artifact-") as tmp:
        if fs.isdir(uri):
            target = Path(tmp) / "data"
            fs.get(uri.rstrip("/") + "/", str(target), recursive=True)
        else:  # e.g. a checkpoint file imported with dsl.importer
            target = Path(tmp) / Path(urlsplit(uri).path).name
            fs.get_file(uri, str(target))
        yield target


def publish(local_dir: Path, uri: str, last: str | None = None) -> None:
    """Copy ``local_dir`` to ``uri``; ``last`` (a file name) is written after everything else, so
    a reader that waits for it never sees a half-written directory."""
    if not is_remote(uri):
        destination = Path(uri)
        if destination.resolve() != Path(local_dir).resolve():
            shutil.copytree(local_dir, destination, dirs_exist_ok=True)
        return
    fs = _filesystem(uri)
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    ordered = [p for p in files if p.name != last] + [p for p in files if p.name == last]
    for path in ordered:
        fs.put_file(str(path), f"{uri.rstrip('/')}/{path.relative_to(local_dir).as_posix()}")
