"""Fetch DVC-tracked data straight from the remote's content-addressed objects, concurrently.

DVC's own transfer of many small files is slow (per-file status queries and
checkout). DVC's layout makes a direct path easy: a tracked directory's hash
``<md5>.dir`` names a JSON manifest of ``{"md5", "relpath"}`` entries, and
every object lives at ``files/md5/<first two hex>/<rest>`` on the remote and in
the cache. Here the manifest is read, objects the cache lacks are fetched in
parallel and the md5 of every fetched object is verified; a shared cache gets
each verified object atomically (so an interrupted pull keeps what it finished),
and each file is written to the output as it arrives (objects already cached are copied from it).

Fast paths exist for ``gs://`` remotes (google-cloud-storage) and local
directory remotes; other remotes fall back to DVC's transfer (the caller logs it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class ObjectMissing(Exception):
    pass


class CorruptObject(Exception):
    def __init__(self, oid: str, actual: str):
        super().__init__(oid, actual)
        self.oid, self.actual = oid, actual


class ObjectSource(Protocol):
    description: str

    def read(self, oid: str) -> bytes: ...


def object_key(oid: str) -> str:
    return f"files/md5/{oid[:2]}/{oid[2:]}"


class LocalSource:
    def __init__(self, root: str):
        self.root = Path(root)
        self.description = str(root)

    def read(self, oid: str) -> bytes:
        try:
            return (self.root / object_key(oid)).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(oid) from None


class GcsSource:
    """Objects of a ``gs://bucket/prefix`` remote through google-cloud-storage."""

    def __init__(self, url: str, settings: Mapping[str, object], connections: int):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from requests.adapters import HTTPAdapter

        parts = urlsplit(url)
        options = {"api_endpoint": str(settings["endpointurl"])} if settings.get("endpointurl") else None
        project = str(settings.get("projectname") or "unused")
        if str(settings.get("allow_anonymous_login", "")).lower() in ("true", "1"):
            client = storage.Client(project=project, credentials=AnonymousCredentials(), client_options=options)
        elif settings.get("credentialpath"):
            client = storage.Client.from_service_account_json(
                str(settings["credentialpath"]), project=project, client_options=options
            )
        else:  # GOOGLE_APPLICATION_CREDENTIALS or Application Default Credentials
            client = storage.Client(project=project, client_options=options)
        adapter = HTTPAdapter(pool_connections=connections, pool_maxsize=connections)
        client._http.mount("https://", adapter)  # the default pool (10) would throttle more threads
        client._http.mount("http://", adapter)
        self.bucket = client.bucket(parts.netloc)
        self.prefix = parts.path.strip("/")
        self.description = url

    def read(self, oid: str) -> bytes:
        from google.api_core.exceptions import NotFound

        name = f"{self.prefix}/{object_key(oid)}" if self.prefix else object_key(oid)
        try:
            # md5 is checked below for every object; the client's own checksum would be a second pass.
            return self.bucket.blob(name).download_as_bytes(checksum=None, raw_download=True)
        except NotFound:
            raise ObjectMissing(oid) from None


def source_for(url: str, settings: Mapping[str, object], connections: int) -> ObjectSource | None:
    scheme = urlsplit(url).scheme
    if scheme == "gs":
        return GcsSource(url, settings, connections)
    if scheme in ("", "file"):
        return LocalSource(urlsplit(url).path if scheme == "file" else url)
    return None


@dataclass
class FetchStats:
    fetched: int = 0  # objects downloaded and verified
    cached: int = 0  # objects already in the cache
    fetched_bytes: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, md5)


class _Progress:
    """One progress line: rewritten in place on a terminal, at most every 2 s in a log."""

    def __init__(self, total: int, cached: int):
        self.total, self.done, self.bytes = total, cached, 0
        self.began = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()
        self.tty = sys.stderr.isatty()

    def add(self, size: int) -> None:
        with self.lock:
            self.done += 1
            self.bytes += size
            now = time.monotonic()
            if now - self.last >= (0.2 if self.tty else 2.0) or self.done == self.total:
                self.last = now
                self._show(now)

    def _show(self, now: float) -> None:
        rate = self.bytes / max(now - self.began, 1e-9) / 1e6
        line = f"fetched {self.done}/{self.total} files, {self.bytes / 1e6:.1f} MB, {rate:.1f} MB/s"
        if self.tty:
            print(f"\r{line}", end="\n" if self.done == self.total else "", file=sys.stderr, flush=True)
        else:
            log.info(line)


def _store(cache: Path, oid: str, data: bytes) -> None:
    target = cache / oid[:2] / oid[2:]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{oid[2:]}.", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o444)  # DVC keeps cache objects read-only
    os.replace(tmp, target)


def _fetch_verified(source: ObjectSource, oid: str, targets: list[Path], cache: Path | None) -> int:
    """Read ``oid``, check its md5, write it to ``targets`` and, when given, into ``cache``."""
    data = source.read(oid)
    actual = hashlib.md5(data).hexdigest()
    if actual != oid.removesuffix(".dir"):
        raise CorruptObject(oid, actual)
    if cache is not None:
        _store(cache, oid, data)
    for target in targets:
        with open(target, "wb") as handle:
            handle.write(data)
    return len(data)


def _manifest(source: ObjectSource, cache: Path, oid: str) -> list[dict[str, str]]:
    if not (cache / oid[:2] / oid[2:]).is_file():
        _fetch_verified(source, oid, [], cache)
    return json.loads((cache / oid[:2] / oid[2:]).read_bytes())


def materialise(
    source: ObjectSource,
    outputs: Mapping[str, str],
    cache: Path,
    destination: Path,
    jobs: int,
    keep_in_cache: bool,
) -> FetchStats:
    """Put each DVC output (path -> hash) under ``destination``, fetching what ``cache`` lacks.

    Each fetched object is verified, then written straight to its output files and, with
    ``keep_in_cache`` (a shared cache that outlives the step), into the cache too. Objects
    absent from the remote come back in ``FetchStats.missing``; a checksum mismatch raises
    CorruptObject with ``path`` set to a file that has that md5. ``destination`` is a staging
    directory: on either failure the caller discards it.
    """
    stats = FetchStats()
    files: list[tuple[str, str]] = []  # (output-relative path, md5)
    for path, oid in outputs.items():
        if oid.endswith(".dir"):
            try:
                entries = _manifest(source, cache, oid)
            except ObjectMissing:
                stats.missing.append((f"{path} (directory listing)", oid))
                continue
            files += [(f"{path}/{entry['relpath']}", entry["md5"]) for entry in entries]
        else:
            files.append((path, oid))
    if stats.missing:
        return stats

    targets: dict[str, list[Path]] = {}
    for path, oid in files:
        targets.setdefault(oid, []).append(destination / path)
    for parent in {target.parent for paths in targets.values() for target in paths}:
        parent.mkdir(parents=True, exist_ok=True)
    cached = {oid for oid in targets if (cache / oid[:2] / oid[2:]).is_file()}
    stats.cached = len(cached)
    for oid in cached:
        for target in targets[oid]:
            shutil.copyfile(cache / oid[:2] / oid[2:], target)

    todo = [oid for oid in targets if oid not in cached]
    progress = _Progress(len(targets), stats.cached)
    if todo:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="dvc-fetch") as pool:
            futures = {
                pool.submit(_fetch_verified, source, oid, targets[oid], cache if keep_in_cache else None): oid
                for oid in todo
            }
            for future in futures:
                oid = futures[future]
                try:
                    size = future.result()
                except ObjectMissing:
                    stats.missing.append((str(targets[oid][0].relative_to(destination)), oid))
                    continue
                except CorruptObject as corrupt:
                    for other in futures:
                        other.cancel()
                    corrupt.path = str(targets[oid][0].relative_to(destination))
                    raise
                stats.fetched += 1
                stats.fetched_bytes += size
                progress.add(size)
    return stats
