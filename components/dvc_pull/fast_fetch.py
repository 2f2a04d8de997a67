"""Fetch DVC-tracked data straight from the remote's content-addressed objects, concurrently.

DVC's own transfer of many small files is slow (per-file status queries and
checkout). DVC's layout makes a direct path easy: a tracked directory's hash
``<md5>.dir`` names a JSON manifest of ``{"md5", "relpath"}`` entries, and
every object lives at ``files/md5/<first two hex>/<rest>`` on the remote and in
the cache. Here the manifest is read, objects the cache lacks are fetched in
parallel and the md5 of every fetched object is verified; a shared cache gets
each verified object atomically (so an interrupted pull keeps what it finished),
and each file is written to the output as it arrives (objects already cached are copied from it).

Fast paths exist for ``gs://`` remotes and local directory remotes; other remotes
fall back to DVC's transfer (the caller logs it). A ``gs://`` object is one GET of
the JSON API's media URL on a pooled urllib3 connection, authorised with a
google-auth token: the same request google-cloud-storage makes, without its
per-request overhead (about three times the CPU per small object), which on a
busy node is what limits throughput.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)

GCS_ENDPOINT = "https://storage.googleapis.com"
GCS_READ_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"


class ObjectMissing(Exception):
    pass


class CorruptObject(Exception):
    def __init__(self, oid: str, actual: str):
        super().__init__(oid, actual)
        self.oid, self.actual = oid, actual
        self.path = ""


class RemoteError(Exception):
    """The remote answered with an error other than "not found", or not at all."""


class ObjectSource(Protocol):
    description: str

    def read(self, oid: str) -> bytes: ...


def object_key(oid: str) -> str:
    return f"files/md5/{oid[:2]}/{oid[2:]}"


def dvc_bool(value: object) -> bool | None:
    """A DVC config boolean ("true", "yes", "1", "on", ...); None when it is not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    return None


def gcs_endpoint(settings: Mapping[str, object]) -> str:
    """Where a ``gs://`` remote's requests go: ``endpointurl``, an emulator, or Google."""
    endpoint = str(settings.get("endpointurl") or os.environ.get("STORAGE_EMULATOR_HOST") or GCS_ENDPOINT)
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    return endpoint.rstrip("/")


class LocalSource:
    def __init__(self, root: str):
        self.root = Path(root)
        self.description = str(root)

    def read(self, oid: str) -> bytes:
        try:
            with open(os.path.join(self.root, "files", "md5", oid[:2], oid[2:]), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ObjectMissing(oid) from None


class GcsSource:
    """Objects of a ``gs://bucket/prefix`` remote: media GETs on a pool of ``connections`` connections."""

    def __init__(self, url: str, settings: Mapping[str, object], connections: int):
        import urllib.request

        import urllib3

        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.description = url
        endpoint = gcs_endpoint(settings)
        self.base = f"{endpoint}/download/storage/v1/b/{quote(self.bucket, safe='')}/o/"
        self.credentials = _gcs_credentials(settings)
        self.refresh_lock = threading.Lock()
        self.timeout = urllib3.Timeout(connect=10.0, read=60.0)
        self.retries = urllib3.Retry(
            total=5,
            backoff_factor=0.25,
            status_forcelist=(408, 429, 500, 502, 503, 504),
            allowed_methods=["GET"],
            raise_on_status=False,
        )
        options: dict = {"maxsize": connections, "block": True, "retries": self.retries, "timeout": self.timeout}
        if urlsplit(endpoint).scheme == "https":
            options["ca_certs"] = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
            if options["ca_certs"] is None:
                try:
                    import certifi

                    options["ca_certs"] = certifi.where()
                except ImportError:
                    options.pop("ca_certs")  # the system's trust store
        proxy = urllib.request.getproxies().get(urlsplit(endpoint).scheme)
        if proxy and not urllib.request.proxy_bypass(urlsplit(endpoint).hostname or ""):
            self.http = urllib3.ProxyManager(proxy, **options)
        else:
            self.http = urllib3.PoolManager(**options)

    def _headers(self, refresh: bool) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.credentials is None:
            return headers
        if refresh or not self.credentials.valid:
            with self.refresh_lock:
                if refresh or not self.credentials.valid:
                    from google.auth.transport.urllib3 import Request

                    self.credentials.refresh(Request(self.http))
        self.credentials.apply(headers)
        return headers

    def read(self, oid: str) -> bytes:
        import urllib3

        name = f"{self.prefix}/{object_key(oid)}" if self.prefix else object_key(oid)
        url = f"{self.base}{quote(name, safe='')}?alt=media"
        for attempt in range(2):
            try:
                # Raw bytes (no decoding): their md5 is checked by the caller for every object.
                response = self.http.request(
                    "GET", url, headers=self._headers(refresh=attempt > 0), decode_content=False
                )
            except urllib3.exceptions.HTTPError as error:
                raise RemoteError(f"cannot read gs://{self.bucket}/{name}: {error}") from None
            if response.status == 200:
                return response.data
            if response.status == 404:
                raise ObjectMissing(oid)
            if response.status == 401 and attempt == 0 and self.credentials is not None:
                continue  # an expired token: refresh once
            break
        detail = response.data[:300].decode("utf-8", "replace").strip()
        raise RemoteError(f"reading gs://{self.bucket}/{name} failed: HTTP {response.status} {detail}")


def _gcs_credentials(settings: Mapping[str, object]):
    """google-auth credentials as DVC's gcsfs would pick them; None for anonymous access."""
    if dvc_bool(settings.get("allow_anonymous_login")):
        return None
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    if settings.get("credentialpath"):
        credentials, _ = google.auth.load_credentials_from_file(
            str(settings["credentialpath"]), scopes=[GCS_READ_SCOPE]
        )
        return credentials
    try:  # GOOGLE_APPLICATION_CREDENTIALS or Application Default Credentials
        credentials, _ = google.auth.default(scopes=[GCS_READ_SCOPE])
    except DefaultCredentialsError:
        if settings.get("endpointurl") or os.environ.get("STORAGE_EMULATOR_HOST"):
            return None  # an emulator or private endpoint: let it decide
        raise
    return credentials


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
    files: int = 0  # files written to the output
    total_bytes: int = 0  # their size
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, md5)


class _Progress:
    """One progress line: rewritten in place on a terminal, at most every 2 s in a log."""

    def __init__(self, total: int, cached: int):
        self.total, self.done, self.bytes = total, cached, 0
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


def _cache_path(cache: Path, oid: str) -> str:
    return os.path.join(cache, oid[:2], oid[2:])


def _store(cache: Path, oid: str, data: bytes) -> None:
    target = _cache_path(cache, oid)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{oid[2:]}.", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o444)  # DVC keeps cache objects read-only
    os.replace(tmp, target)


def _set_exec(path: str) -> None:
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)  # as DVC's checkout does


def _fetch_verified(source: ObjectSource, oid: str, targets: list[tuple[str, bool]], cache: Path | None) -> int:
    """Read ``oid``, check its md5, write it to ``targets`` (path, executable) and, when given, into ``cache``."""
    data = source.read(oid)
    actual = hashlib.md5(data).hexdigest()
    if actual != oid.removesuffix(".dir"):
        raise CorruptObject(oid, actual)
    if cache is not None:
        _store(cache, oid, data)
    for target, executable in targets:
        with open(target, "wb") as handle:
            handle.write(data)
        if executable:
            _set_exec(target)
    return len(data)


def _manifest(source: ObjectSource, cache: Path, oid: str) -> list[dict]:
    path = _cache_path(cache, oid)
    if not os.path.isfile(path):
        _fetch_verified(source, oid, [], cache)
    with open(path, "rb") as handle:
        return json.loads(handle.read())


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
    CorruptObject with ``path`` set to a file that has that md5, a failing remote RemoteError.
    ``destination`` is a staging directory: on any failure the caller discards it.
    """
    stats = FetchStats()
    files: list[tuple[str, str, bool]] = []  # (output-relative path, md5, executable)
    for path, oid in outputs.items():
        if oid.endswith(".dir"):
            try:
                entries = _manifest(source, cache, oid)
            except ObjectMissing:
                stats.missing.append((f"{path} (directory listing)", oid))
                continue
            files += [(f"{path}/{e['relpath']}", e["md5"], bool(e.get("isexec"))) for e in entries]
        else:
            files.append((path, oid, False))
    if stats.missing:
        return stats

    root = str(destination)
    targets: dict[str, list[tuple[str, bool]]] = {}
    first_path: dict[str, str] = {}
    for path, oid, executable in files:
        targets.setdefault(oid, []).append((os.path.join(root, path), executable))
        first_path.setdefault(oid, path)
    for parent in {os.path.dirname(target) for paths in targets.values() for target, _ in paths}:
        os.makedirs(parent, exist_ok=True)
    sizes: dict[str, int] = {}
    if os.path.isdir(cache):
        for oid, paths in targets.items():
            cached = _cache_path(cache, oid)
            if os.path.isfile(cached):
                for target, executable in paths:
                    shutil.copyfile(cached, target)
                    if executable:
                        _set_exec(target)
                sizes[oid] = os.path.getsize(cached)
    stats.cached = len(sizes)

    todo = iter([oid for oid in targets if oid not in sizes])
    progress = _Progress(len(targets), stats.cached)
    lock = threading.Lock()
    failure: list[BaseException] = []
    store_in = cache if keep_in_cache else None

    def worker() -> None:
        while True:
            with lock:
                if failure:
                    return
                oid = next(todo, None)
            if oid is None:
                return
            try:
                size = _fetch_verified(source, oid, targets[oid], store_in)
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
