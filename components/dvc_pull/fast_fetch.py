"""Fetch DVC-tracked data straight from the remote's content-addressed objects, concurrently.

DVC's own transfer of many small files is slow (per-file status queries and
checkout). DVC's layout makes a direct path easy: a tracked directory's hash
``<md5>.dir`` names a JSON manifest of ``{"md5", "relpath"}`` entries, and
every object lives at ``files/md5/<first two hex>/<rest>`` on the remote and in
the cache. Here the manifest is read, objects the cache lacks are fetched in
parallel and the md5 of every fetched object is verified; a shared cache gets
each verified object atomically (so an interrupted pull keeps what it finished),
and each file is written to the output as it arrives (objects already cached are copied from it).

The remote is somebody else's: a shared bucket. Every manifest is checked before
anything is written (``parse_manifest``), objects are streamed to disk in bounded
chunks under a temporary name and appear only once their md5 is right, and a
cached object is verified like a fetched one, never trusted by its name.

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
import random
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import quote, urlsplit

from components.dvc_pull.redaction import redact_text

log = logging.getLogger(__name__)

GCS_ENDPOINT = "https://storage.googleapis.com"
GCS_READ_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
CHUNK_BYTES = 1 << 20  # what one transfer holds in memory at a time
MAX_MANIFEST_BYTES = 256 << 20  # a listing of millions of files; anything larger is not a DVC manifest
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 6

OID = re.compile(r"[0-9a-f]{32}(\.dir)?")
FILE_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Timeouts:
    """How long to wait for a remote: per connection, per read, and in all for one object.

    ``object_deadline`` bounds retrying: no attempt starts, and no wait for the server
    lasts, past that many seconds after the object's first request. A transfer that keeps
    receiving data is never cut off by it.
    """

    connect: float = 10.0
    read: float = 20.0
    object_deadline: float = 60.0


class ObjectMissing(Exception):
    pass


class CorruptObject(Exception):
    def __init__(self, oid: str, actual: str):
        super().__init__(oid, actual)
        self.oid, self.actual = oid, actual
        self.path = ""


class RemoteError(Exception):
    """The remote answered with an error other than "not found", or not at all."""


class CredentialsRefused(RemoteError):
    """The token endpoint refused the credentials (revoked key, wrong project, clock skew...)."""


class BadManifest(Exception):
    """A ``.dir`` listing that is not a safe DVC manifest; ``path`` is the tracked output it belongs to."""

    def __init__(self, oid: str, reason: str):
        super().__init__(oid, reason)
        self.oid, self.reason = oid, reason
        self.path = ""


class ObjectSink(Protocol):
    def restart(self) -> None: ...

    def write(self, chunk: bytes) -> None: ...


class ObjectSource(Protocol):
    description: str

    def read_into(self, oid: str, sink: ObjectSink) -> None:
        """Stream object ``oid`` into ``sink``; a retry calls ``sink.restart()`` first."""


def _object_relpath(oid: str) -> str:
    """``<first two hex>/<rest>``, where DVC keeps ``oid`` under ``files/md5/`` on a remote and in a cache."""
    if not OID.fullmatch(oid):  # callers check first; this keeps a bad name from ever becoming a path
        raise ValueError(f"not a DVC md5: {oid!r}")
    return f"{oid[:2]}/{oid[2:]}"


def object_key(oid: str) -> str:
    return f"files/md5/{_object_relpath(oid)}"


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


# --- Manifests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    relpath: str
    md5: str
    executable: bool = False


def _relpath_problem(relpath: object) -> str | None:
    if not isinstance(relpath, str):
        return "relpath is not a string"
    if not relpath:
        return "relpath is empty"
    if "\0" in relpath:
        return "relpath contains a NUL byte"
    if relpath.startswith("/") or "\\" in relpath:
        return "relpath is not a relative POSIX path"
    parts = relpath.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "relpath has an empty, '.' or '..' segment"
    return None


def parse_manifest(data: bytes, oid: str) -> list[Entry]:
    """The entries of the ``.dir`` object ``data``, or BadManifest saying why it cannot be trusted.

    A valid manifest is a JSON list of ``{"md5": <32 hex>, "relpath": <relative path>}``
    objects (``isexec`` optional), where no path is claimed twice and no file is also
    a directory. Paths stay below the tracked directory: no absolute paths, no ``..``.
    """
    try:
        listing = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadManifest(oid, "the listing is not JSON") from None
    if not isinstance(listing, list):
        raise BadManifest(oid, f"the listing is a JSON {type(listing).__name__}, not a list of entries")
    entries: list[Entry] = []
    seen: set[str] = set()
    for item in listing:
        if not isinstance(item, dict):
            raise BadManifest(oid, f"entry {item!r} is not an object")
        relpath, md5 = item.get("relpath"), item.get("md5")
        problem = _relpath_problem(relpath)
        if problem:
            raise BadManifest(oid, f"{problem}: entry {_shown(item)}")
        if not isinstance(md5, str) or not FILE_MD5.fullmatch(md5):
            raise BadManifest(oid, f"md5 {md5!r} is not 32 lowercase hex digits: entry {_shown(item)}")
        if relpath in seen:
            raise BadManifest(oid, f"relpath {relpath!r} is listed twice")
        seen.add(relpath)
        entries.append(Entry(relpath, md5, item.get("isexec") is True))
    for entry in entries:
        parent = PurePosixPath(entry.relpath).parent
        while parent.parts:
            if parent.as_posix() in seen:
                raise BadManifest(
                    oid, f"{parent.as_posix()!r} is listed as a file and as the directory of {entry.relpath!r}"
                )
            parent = parent.parent
    return entries


def _shown(item: Mapping) -> str:
    text = repr({key: item.get(key) for key in ("md5", "relpath") if key in item} or item)
    return text if len(text) <= 300 else text[:300] + "...}"


# --- Sources ------------------------------------------------------------------------------------------


class LocalSource:
    def __init__(self, root: str):
        self.root = Path(root)
        self.description = str(root)

    def read_into(self, oid: str, sink: ObjectSink) -> None:
        try:
            handle = open(os.path.join(self.root, object_key(oid)), "rb")
        except FileNotFoundError:
            raise ObjectMissing(oid) from None
        with handle:
            sink.restart()
            while chunk := handle.read(CHUNK_BYTES):
                sink.write(chunk)


class GcsSource:
    """Objects of a ``gs://bucket/prefix`` remote: media GETs on a pool of ``connections`` connections."""

    def __init__(self, url: str, settings: Mapping[str, object], connections: int, timeouts: Timeouts = Timeouts()):
        import urllib.request

        import urllib3

        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.description = url
        self.timeouts = timeouts
        endpoint = gcs_endpoint(settings)
        self.endpoint = redact_text(endpoint)
        self.base = f"{endpoint}/download/storage/v1/b/{quote(self.bucket, safe='')}/o/"
        self.credentials, self.credentials_origin = gcs_credentials(settings)
        self.refresh_lock = threading.Lock()
        # Retries are ours (a whole object restarts, within its deadline), so urllib3 makes none.
        options: dict = {
            "maxsize": connections,
            "block": True,
            "retries": False,
            "timeout": urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
        }
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
                    from google.auth.exceptions import RefreshError, TransportError
                    from google.auth.transport.urllib3 import Request

                    try:
                        self.credentials.refresh(Request(self.http))
                    except RefreshError as error:
                        reason = error.args[0] if error.args and isinstance(error.args[0], str) else ""
                        raise CredentialsRefused(
                            f"the token endpoint refused the credentials of {self.credentials_origin}"
                            f"{': ' + redact_text(reason.splitlines()[0][:200]) if reason else ''}"
                        ) from None
                    except TransportError as error:
                        raise RemoteError(
                            f"cannot reach the token endpoint for {self.credentials_origin}: {type(error).__name__}"
                        ) from None
        self.credentials.apply(headers)
        return headers

    def read_into(self, oid: str, sink: ObjectSink) -> None:
        import urllib3

        name = f"{self.prefix}/{object_key(oid)}" if self.prefix else object_key(oid)
        url = f"{self.base}{quote(name, safe='')}?alt=media"
        where = f"gs://{self.bucket}/{name}"
        began = time.monotonic()
        deadline = began + self.timeouts.object_deadline
        refreshed = refresh_now = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            left = max(deadline - time.monotonic(), 0.1)
            timeout = urllib3.Timeout(connect=min(self.timeouts.connect, left), read=min(self.timeouts.read, left))
            try:
                headers, refresh_now = self._headers(refresh=refresh_now), False
                # Raw bytes (no decoding): their md5 is checked by the caller for every object.
                response = self.http.request(
                    "GET", url, headers=headers, timeout=timeout, preload_content=False, decode_content=False
                )
                try:
                    status = response.status
                    if status == 200:
                        sink.restart()
                        for chunk in response.stream(CHUNK_BYTES, decode_content=False):
                            sink.write(chunk)
                        return
                    detail = response.read(300, decode_content=False).decode("utf-8", "replace").strip()
                finally:
                    response.release_conn()
            except urllib3.exceptions.HTTPError as error:
                status, detail = None, _describe(error, self.timeouts)
            if status == 404:
                raise ObjectMissing(oid)
            if status == 401 and not refreshed and self.credentials is not None:
                refreshed = refresh_now = True  # an expired token: refresh once, at once
                continue
            if status is not None and status not in RETRY_STATUSES:
                raise RemoteError(f"reading {where} failed: HTTP {status} {redact_text(detail)[:300]}")
            reason = f"HTTP {status}" if status is not None else detail
            pause = min(0.25 * 2 ** (attempt - 1), 4.0) * (0.5 + random.random() / 2)
            elapsed = time.monotonic() - began
            if attempt == MAX_ATTEMPTS or time.monotonic() + pause >= deadline:
                raise RemoteError(
                    f"gave up on {where} at {self.endpoint} after {attempt} attempt(s) in {elapsed:.0f} s: {reason}"
                )
            if attempt == 1:  # one line per object; the attempts after it go to DEBUG
                log.warning(
                    "%s: %s; retrying, up to %d more times within %g s",
                    where,
                    reason,
                    MAX_ATTEMPTS - 1,
                    self.timeouts.object_deadline,
                )
            else:
                log.debug("%s: %s; attempt %d of %d", where, reason, attempt + 1, MAX_ATTEMPTS)
            time.sleep(pause)


def _describe(error: Exception, timeouts: Timeouts) -> str:
    """One line for a transport failure, without the URL (the caller names the object)."""
    import urllib3

    cause = getattr(error, "reason", None) or error
    if isinstance(cause, urllib3.exceptions.ConnectTimeoutError) or isinstance(
        error, urllib3.exceptions.ConnectTimeoutError
    ):
        return f"no connection within {timeouts.connect:g} s"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError) or isinstance(cause, urllib3.exceptions.ReadTimeoutError):
        return f"the server did not answer within {timeouts.read:g} s"
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return "the connection broke during the transfer"
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return "connection refused or unreachable"
    return type(cause).__name__


def gcs_credentials(settings: Mapping[str, object]):
    """(google-auth credentials or None for anonymous access, where they come from) as gcsfs would pick them.

    A key file given by ``credentialpath`` or ``GOOGLE_APPLICATION_CREDENTIALS`` must load:
    a broken one fails here, naming the file, rather than falling back to anonymous access.
    """
    if dvc_bool(settings.get("allow_anonymous_login")):
        return None, "anonymous access"
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    for origin, path in (
        ("credentialpath", settings.get("credentialpath")),
        ("GOOGLE_APPLICATION_CREDENTIALS", os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")),
    ):
        if path:
            described = f"key file {path} (from {origin})"
            try:
                credentials, _ = google.auth.load_credentials_from_file(str(path), scopes=[GCS_READ_SCOPE])
            except Exception as error:  # never the file's content: the error may quote it
                raise CredentialsUnusable(
                    f"GCS credentials {described} cannot be used ({type(error).__name__}): it must be a "
                    "service-account or authorized-user JSON key"
                ) from None
            return credentials, described
    try:  # Application Default Credentials (gcloud's file, the metadata server)
        credentials, _ = google.auth.default(scopes=[GCS_READ_SCOPE])
    except DefaultCredentialsError:
        adc_file = application_default_credentials_file()
        if adc_file:  # gcloud's file is there but unusable: never fall back to anonymous access
            raise CredentialsUnusable(unusable_adc_message(adc_file)) from None
        if settings.get("endpointurl") or os.environ.get("STORAGE_EMULATOR_HOST"):
            return None, "no credentials (custom endpoint)"  # an emulator or private endpoint: let it decide
        raise
    return credentials, "Application Default Credentials"


def application_default_credentials_file() -> str | None:
    """gcloud's Application Default Credentials file, where it exists."""
    from google.auth import _cloud_sdk

    path = _cloud_sdk.get_application_default_credentials_path()
    return path if os.path.isfile(path) else None


def unusable_adc_message(path: str) -> str:
    return (
        f"GCS credentials file {path} (Application Default Credentials, from `gcloud auth application-default "
        "login`) cannot be used: log in again, or set GOOGLE_APPLICATION_CREDENTIALS"
    )


class CredentialsUnusable(RemoteError):
    """A key file that exists but google-auth cannot load."""


def source_for(
    url: str, settings: Mapping[str, object], connections: int, timeouts: Timeouts = Timeouts()
) -> ObjectSource | None:
    scheme = urlsplit(url).scheme
    if scheme == "gs":
        return GcsSource(url, settings, connections, timeouts)
    if scheme in ("", "file"):
        return LocalSource(urlsplit(url).path if scheme == "file" else url)
    return None


# --- Materialising outputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """A DVC output to materialise: its repository path and hash, optionally one sub-path inside it."""

    path: str
    oid: str
    within: str = ""  # a path inside a tracked directory, relative to it ("" for the whole output)

    @property
    def wanted(self) -> str:
        return f"{self.path}/{self.within}" if self.within else self.path


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


def cache_path(cache: Path, oid: str) -> str:
    """Where ``oid`` lies in a cache's ``files/md5`` directory ``cache``."""
    return os.path.join(cache, _object_relpath(oid))


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
