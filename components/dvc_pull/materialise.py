"""Put DVC outputs into a directory from a source's objects, concurrently, verifying every md5.

Every listing an output needs is read and checked first; nothing is written before all
of them pass. Then ``jobs`` threads fetch the objects the cache lacks: each is streamed
in bounded chunks with an incremental md5 and reaches its output files (and, with a
shared cache, the cache, atomically, so an interrupted pull keeps what it finished) only
once its md5 is right. An object found in the cache is verified like a fetched one,
never trusted by its name. Objects that fit in one chunk are verified in memory and
written straight to their files; larger ones go through a temporary file that is renamed
into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.dvc_pull.manifests import MAX_MANIFEST_BYTES, BadManifest, Entry, Output, cache_path, parse_manifest
from components.dvc_pull.sources import CHUNK_BYTES, ObjectMissing, ObjectSink, ObjectSource, RemoteError

log = logging.getLogger(__name__)


class CorruptObject(Exception):
    def __init__(self, oid: str, actual: str):
        super().__init__(oid, actual)
        self.oid, self.actual = oid, actual
        self.path = ""


@dataclass
class FetchStats:
    fetched: int = 0  # objects downloaded and verified
    cached: int = 0  # objects already in the cache
    fetched_bytes: int = 0
    files: int = 0  # files written to the output
    total_bytes: int = 0  # their size
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, md5)


class _Progress:
    """One progress line: rewritten in place on a terminal, at most every 2 s in a log."""

    def __init__(self, total: int):
        self.total, self.done, self.bytes = total, 0, 0
        self.began = time.monotonic()
        self.last = self.began
        self.lock = threading.Lock()
        self.tty = sys.stderr.isatty()

    def add(self, size: int) -> None:
        with self.lock:
            self.done += 1
            self.bytes += size
            now = time.monotonic()
            if now - self.last >= (0.2 if self.tty else 2.0) or (self.done == self.total and self.tty):
                self.last = now
                self._show(now)

    def _show(self, now: float) -> None:
        elapsed = max(now - self.began, 1e-9)
        line = (
            f"fetched {self.done}/{self.total} files, {self.bytes / 1e6:.1f} MB, "
            f"{self.done / elapsed:.0f} files/s, {self.bytes / elapsed / 1e6:.1f} MB/s"
        )
        if self.tty:
            print(f"\r{line}", end="\n" if self.done == self.total else "", file=sys.stderr, flush=True)
        else:
            log.info(line)


class _HashingFile:
    """Takes an object's chunks and their md5 as they come, never holding more than one chunk.

    An object that fits in one chunk stays in memory until it is verified and then is written
    straight to its targets (most files of a dataset are small, and a temporary file and a
    rename per file cost more than the transfer); a larger one goes to a temporary file in
    ``directory`` that is renamed into place once verified.
    """

    def __init__(self, directory: str, limit: int | None = None):
        self.directory, self.limit = directory, limit
        self.path: str | None = None
        self.handle = None
        self.restart()

    def restart(self) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
        self.head: list[bytes] = []
        self.md5 = hashlib.md5()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise RemoteError(f"an object over {self.limit >> 20} MiB where a directory listing was expected")
        self.md5.update(chunk)
        if self.handle is None and self.size <= CHUNK_BYTES:
            self.head.append(chunk)
            return
        if self.handle is None:
            fd, self.path = tempfile.mkstemp(prefix=".dvc-partial-", dir=self.directory)
            self.handle = os.fdopen(fd, "wb")
        for held in self.head:
            self.handle.write(held)
        self.head = []
        self.handle.write(chunk)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def write_to(self, target: str) -> None:
        """Put the verified content at ``target``: the in-memory bytes, or the temporary file renamed or copied."""
        if self.path is None:
            with open(target, "wb") as handle:
                for held in self.head:
                    handle.write(held)
        else:
            shutil.copyfile(self.path, target)

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _copy_into(source_path: str, sink: ObjectSink) -> None:
    with open(source_path, "rb") as handle:
        sink.restart()
        while chunk := handle.read(CHUNK_BYTES):
            sink.write(chunk)


def _publish(partial: _HashingFile, oid: str, targets: list[tuple[str, bool]], cache: Path | None) -> None:
    """Put a verified object at its targets (and a copy into ``cache``); cache entries are read-only."""
    if cache is not None:
        cached = cache_path(cache, oid)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{oid[2:]}.", dir=os.path.dirname(cached))
        os.close(fd)
        try:
            partial.write_to(tmp)
            os.chmod(tmp, 0o444)  # as DVC keeps them
            os.replace(tmp, cached)
        except BaseException:
            os.unlink(tmp)
            raise
    if not targets:
        return
    *others, last = targets
    for target, executable in others:
        partial.write_to(target)
        if executable:
            os.chmod(target, _file_mode(True))
    if partial.path is None:
        partial.write_to(last[0])
        if last[1]:
            os.chmod(last[0], _file_mode(True))
    else:
        os.chmod(partial.path, _file_mode(last[1]))  # mkstemp's 0600, made what DVC's checkout gives
        os.replace(partial.path, last[0])
        partial.path = None


def _file_mode(executable: bool) -> int:
    mode = 0o666 & ~_UMASK
    return mode | stat.S_IEXEC if executable else mode  # as DVC's checkout sets the executable bit


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _obtain(
    source: ObjectSource,
    oid: str,
    targets: list[tuple[str, bool]],
    cache: Path,
    keep_in_cache: bool,
    workdir: str,
    limit: int | None = None,
) -> tuple[int, bool]:
    """Put verified object ``oid`` at ``targets``; returns (size, whether the cache had it).

    A cached copy is used only when its md5 is right; otherwise the object is fetched
    (and, with ``keep_in_cache``, the bad cache entry replaced).
    """
    expected = oid.removesuffix(".dir")
    partial = _HashingFile(os.path.dirname(targets[0][0]) if targets else workdir, limit)
    try:
        cached = cache_path(cache, oid)
        if os.path.isfile(cached):
            _copy_into(cached, partial)
            if partial.md5.hexdigest() == expected:
                partial.close()
                _publish(partial, oid, targets, None)
                return partial.size, True
            log.warning("cache entry %s does not match its md5: fetching it again", cached)
        source.read_into(oid, partial)
        partial.close()
        actual = partial.md5.hexdigest()
        if actual != expected:
            raise CorruptObject(oid, actual)
        _publish(partial, oid, targets, cache if keep_in_cache or os.path.isfile(cached) else None)
        return partial.size, False
    finally:
        partial.discard()


def _listing(source: ObjectSource, cache: Path, oid: str, workdir: str) -> list[Entry]:
    """The verified, parsed manifest of ``oid``; it is kept in the (private or shared) cache."""
    _obtain(source, oid, [], cache, keep_in_cache=True, workdir=workdir, limit=MAX_MANIFEST_BYTES)
    with open(cache_path(cache, oid), "rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_MANIFEST_BYTES:
            raise BadManifest(oid, f"the listing is over {MAX_MANIFEST_BYTES >> 20} MiB")
        data = handle.read()
    actual = hashlib.md5(data).hexdigest()
    if actual != oid.removesuffix(".dir"):  # the file changed since it was verified (a shared cache)
        raise CorruptObject(oid, actual)
    return parse_manifest(data, oid)


class NotInOutput(Exception):
    """A requested sub-path that the tracked directory does not contain."""

    def __init__(self, output: Output):
        super().__init__(output)
        self.output = output


def _select(output: Output, entries: list[Entry]) -> list[Entry]:
    if not output.within:
        return entries
    prefix = output.within + "/"
    chosen = [e for e in entries if e.relpath == output.within or e.relpath.startswith(prefix)]
    if not chosen:
        raise NotInOutput(output)
    return chosen


def materialise(
    source: ObjectSource,
    outputs: Sequence[Output],
    cache: Path,
    destination: Path,
    jobs: int,
    keep_in_cache: bool,
) -> FetchStats:
    """Put each DVC output under ``destination``, fetching what ``cache`` lacks.

    Every manifest is read and checked first (BadManifest, with ``path`` set to the
    tracked output); nothing is written to ``destination`` before all of them pass.
    Then each object is streamed, verified, and moved to its output files; with
    ``keep_in_cache`` (a shared cache that outlives the step) it enters the cache too.
    Objects absent from the remote come back in ``FetchStats.missing``; a checksum
    mismatch raises CorruptObject with ``path`` set to a file that has that md5, a
    failing remote RemoteError. ``destination`` is a staging directory: on any failure
    the caller discards it.
    """
    stats = FetchStats()
    cache.mkdir(parents=True, exist_ok=True)
    workdir = str(cache)  # listings are fetched beside the cache, never into the output
    files: list[tuple[str, str, bool]] = []  # (output-relative path, md5, executable)
    directories: list[str] = []
    for output in outputs:
        if not output.oid.endswith(".dir"):
            files.append((output.path, output.oid, False))
            continue
        try:
            entries = _select(output, _listing(source, cache, output.oid, workdir))
        except ObjectMissing:
            stats.missing.append((f"{output.path} (directory listing)", output.oid))
            continue
        except BadManifest as bad:
            bad.path = output.path
            raise
        except CorruptObject as corrupt:
            corrupt.path = f"{output.path} (directory listing)"
            raise
        if not output.within or any(e.relpath.startswith(output.within + "/") for e in entries):
            directories.append(output.wanted)  # DVC creates a tracked directory even when it is empty
        files += [(f"{output.path}/{e.relpath}", e.md5, e.executable) for e in entries]
    if stats.missing:
        return stats

    root = str(destination)
    targets: dict[str, list[tuple[str, bool]]] = {}
    first_path: dict[str, str] = {}
    for path, oid, executable in files:
        targets.setdefault(oid, []).append((os.path.join(root, path), executable))
        first_path.setdefault(oid, path)
    for directory in {
        *(os.path.join(root, d) for d in directories),
        *(os.path.dirname(target) for paths in targets.values() for target, _ in paths),
    }:
        os.makedirs(directory, exist_ok=True)

    todo = iter(list(targets))
    progress = _Progress(len(targets))
    lock = threading.Lock()
    failure: list[BaseException] = []
    sizes: dict[str, int] = {}

    def worker() -> None:
        while True:
            with lock:
                if failure:
                    return
                oid = next(todo, None)
            if oid is None:
                return
            try:
                size, was_cached = _obtain(source, oid, targets[oid], cache, keep_in_cache, workdir)
            except ObjectMissing:
                with lock:
                    stats.missing.append((first_path[oid], oid))
                continue
            except CorruptObject as corrupt:
                corrupt.path = first_path[oid]
                with lock:
                    failure.append(corrupt)
                return
            except BaseException as error:  # a remote or disk failure: stop every worker
                with lock:
                    failure.append(error)
                return
            with lock:
                sizes[oid] = size
                if was_cached:
                    stats.cached += 1
                else:
                    stats.fetched += 1
                    stats.fetched_bytes += size
            progress.add(size)

    threads = [threading.Thread(target=worker, name=f"dvc-fetch-{i}", daemon=True) for i in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failure:
        raise failure[0]
    stats.files = len(files)
    stats.total_bytes = sum(sizes.get(oid, 0) for _, oid, _ in files)
    stats.missing.sort()
    return stats
