"""Where DVC objects are read from: a directory remote, or a ``gs://`` remote over pooled HTTP connections.

A source streams one object (named by its md5) into a sink, restarting the sink when it
retries; it raises ``ObjectMissing`` for an object the remote does not hold and
``RemoteError`` for any other failure. A ``gs://`` object is one GET of the JSON API's
media URL on a pooled urllib3 connection, authorised with a google-auth token: the
request google-cloud-storage makes, without its per-request overhead (about three times
the CPU per small object), which on a busy node is what limits throughput. Retries
(408, 429, 5xx, timeouts, broken transfers) restart the object within its deadline
(``Timeouts``); a 404 is final at once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

from components.dvc_pull.manifests import object_key
from components.dvc_pull.redaction import redact_text

log = logging.getLogger(__name__)

GCS_ENDPOINT = "https://storage.googleapis.com"
GCS_READ_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
CHUNK_BYTES = 1 << 20  # what one transfer holds in memory at a time
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 6


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


class RemoteError(Exception):
    """The remote answered with an error other than "not found", or not at all."""


class CredentialsRefused(RemoteError):
    """The token endpoint refused the credentials (revoked key, wrong project, clock skew...)."""


class ObjectSink(Protocol):
    def restart(self) -> None: ...

    def write(self, chunk: bytes) -> None: ...


class ObjectSource(Protocol):
    description: str

    def read_into(self, oid: str, sink: ObjectSink) -> None:
        """Stream object ``oid`` into ``sink``; a retry calls ``sink.restart()`` first."""


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
