"""A DVC remote as the fast fetch sees it: opened (credentials checked, endpoint probed), then read into a directory.

Both of a pull's paths use it: the direct one, and DVC's wherever the objects of a ``gs://``
or directory remote can still come through the fast fetch. Every failure becomes a
``DvcPullError`` naming the remote (its URL redacted) and what is wrong: a corrupt object
with both checksums, each missing object with its md5, an unsafe listing with its entry.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from components.dvc_pull import manifests, materialise, sources
from components.dvc_pull.checks import check_gcs_credentials
from components.dvc_pull.errors import DvcPullError
from components.dvc_pull.redaction import redact_text, redact_url

log = logging.getLogger(__name__)


def probe_endpoint(name: str, url: str, settings: Mapping[str, object], timeout: float) -> None:
    """A TCP connect to an object store's endpoint: fails in seconds where client retries take minutes."""
    scheme = urlsplit(url).scheme
    if scheme == "gs":
        endpoint = sources.gcs_endpoint(settings)
    elif scheme in ("http", "https", "webdav", "webdavs"):
        endpoint = url.replace("webdav", "http", 1)
    else:
        endpoint = str(settings.get("endpointurl") or "")
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) is unreachable: cannot connect to {parts.hostname}:{port} "
            f"({error.strerror or error})"
        ) from None


def open_source(
    name: str, url: str, settings: Mapping[str, object], jobs: int, timeouts: sources.Timeouts
) -> sources.ObjectSource:
    """The fast path's reader of ``url``, after checking credentials and that the remote answers."""
    if url.startswith("gs://"):
        log.info("GCS credentials: %s", check_gcs_credentials(settings))
    probe_endpoint(name, url, settings, timeouts.connect)  # a missing object or listing is reported by the fetch
    try:
        source = sources.source_for(url, settings, connections=jobs, timeouts=timeouts)
    except sources.RemoteError as error:  # a key file google-auth cannot load: the message names it
        raise DvcPullError(f"cannot open DVC remote {name!r} ({redact_url(url)}): {error}") from None
    except Exception as error:
        raise DvcPullError(
            f"cannot open DVC remote {name!r} ({redact_url(url)}): {type(error).__name__}: {first_line(error)}"
        ) from None
    if isinstance(source, sources.LocalSource) and not source.root.is_dir():
        raise DvcPullError(
            f"DVC remote {name!r} ({redact_url(url)}) does not exist or is empty: nothing was ever pushed there"
        )
    return source


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return redact_text(text.splitlines()[0]) if text else type(error).__name__


def missing_error(name: str, url: str, missing: list[tuple[str, str]]) -> DvcPullError:
    shown = ", ".join(f"{path} (md5 {oid})" for path, oid in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return DvcPullError(
        f"{len(missing)} object(s) missing from DVC remote {name!r} ({redact_url(url)}): {shown}{more}; "
        "was `dvc push` run for this revision?"
    )


def fetch_objects(
    source: sources.ObjectSource,
    outputs: Sequence[manifests.Output],
    cache: Path,
    staging: Path,
    name: str,
    url: str,
    jobs: int,
    shared_cache: bool,
) -> materialise.FetchStats:
    """Put ``outputs`` under ``staging`` from remote ``name`` (at ``url``), through the cache's ``files/md5``
    directory ``cache``; with ``shared_cache`` each fetched object also stays there."""
    where = f"DVC remote {name!r} ({redact_url(url)})"
    try:
        stats = materialise.materialise(source, outputs, cache, staging, jobs=jobs, keep_in_cache=shared_cache)
    except manifests.BadManifest as bad:
        raise bad_manifest_error(where, bad) from None
    except materialise.NotInOutput as absent:
        raise DvcPullError(
            f"path {absent.output.wanted!r} is not in the tracked directory {absent.output.path!r} "
            f"(md5 {absent.output.oid}) on {where}; give a file or folder inside it"
        ) from None
    except materialise.CorruptObject as corrupt:
        raise DvcPullError(
            f"{corrupt.path} is corrupt on {where}: expected md5 "
            f"{corrupt.oid.removesuffix('.dir')}, got {corrupt.actual}"
        ) from None
    except sources.RemoteError as error:
        raise DvcPullError(f"{where} failed: {error}") from None
    if stats.missing:
        raise missing_error(name, url, stats.missing)
    log.info(
        "fetched %d objects (%d bytes) from %s; %d were already in the DVC cache",
        stats.fetched,
        stats.fetched_bytes,
        redact_url(url),
        stats.cached,
    )
    return stats


def bad_manifest_error(where: str, bad: manifests.BadManifest) -> DvcPullError:
    return DvcPullError(
        f"{where} holds an unsafe or malformed listing for the tracked directory {bad.path!r} "
        f"(md5 {bad.oid}): {bad.reason}; nothing was written. Whoever can write to the remote "
        "should push the directory again with DVC"
    )
