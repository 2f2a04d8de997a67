"""kfp-torch's connection to Kubeflow Pipelines: a ``kfp.Client`` from flags and the environment, and plain errors.

Host, namespace and token come from flags or the environment (see :func:`connect`). The token reaches
``kfp.Client`` as its credentials, read again for every request (ServiceAccount tokens rotate); it is
never printed, logged or put in an error message. Whatever ``kfp.Client`` raises (an ``ApiException``,
an unreachable host) becomes a :class:`KfpError` that says what was tried and what to do, through
:meth:`Connection.explain`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import kfp
import urllib3
from kfp.client.token_credentials_base import TokenCredentialsBase
from kfp_server_api.exceptions import ApiException

DEFAULT_HOST = "http://127.0.0.1:8080"
DEFAULT_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
PORT_FORWARD_HINT = (
    "if Kubeflow runs in a cluster, forward its UI with "
    "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` and use --host http://127.0.0.1:8080"
)


class KfpError(Exception):
    """Anything that went wrong talking to KFP; the message is safe to print."""


class KfpConnectionError(KfpError):
    pass


class KfpAuthError(KfpError):
    pass


class KfpNotFound(KfpError):
    pass


# What kfp.Client raises when the host cannot be reached (urllib3 underneath kfp_server_api).
UNREACHABLE = (urllib3.exceptions.HTTPError,)


@dataclass
class TokenSource:
    """Where the bearer token comes from; ``describe()`` names the source, never the value."""

    origin: str  # e.g. "--token-file", "KFP_TOKEN"
    path: Path | None = None
    value: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"the token file {self.path} ({self.origin})" if self.path else f"the token in {self.origin}"

    def read(self) -> str:
        if self.path is None:
            token = (self.value or "").strip()
        else:
            try:
                token = self.path.read_text().strip()
            except OSError as error:
                raise KfpAuthError(f"cannot read {self.describe()}: {error.strerror or error}") from None
        if not token:
            raise KfpAuthError(f"{self.describe()} is empty")
        return token


class TokenCredentials(TokenCredentialsBase):
    """``kfp.Client`` credentials that read a :class:`TokenSource` for every request."""

    def __init__(self, source: TokenSource):
        self.source = source
        self.tokens_sent: set[str] = set()  # to keep them out of error messages

    def refresh_api_key_hook(self, config) -> None:
        token = self.source.read()
        self.tokens_sent.add(token)
        config.api_key["authorization"] = token


class _Client(kfp.Client):
    """``kfp.Client`` whose health check (made when it is built without a namespace) is tried once.

    kfp.Client tries five times, five seconds apart, logging a traceback each time; an unreachable
    or refusing host should be reported at once instead.
    """

    def get_kfp_healthz(self, sleep_duration: int = 5):
        return self._healthz_api.healthz_service_get_healthz()


@dataclass
class Connection:
    host: str
    namespace: str | None = None
    token: TokenSource | None = None
    host_origin: str = "--host"
    _credentials: TokenCredentials | None = field(default=None, init=False, repr=False)
    _client: kfp.Client | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> kfp.Client:
        """The ``kfp.Client``, built on first use: without a namespace building it asks the server for its health."""
        if self._client is None:
            self._credentials = TokenCredentials(self.token) if self.token else None
            logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings would repeat our error
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "This client only works with", FutureWarning)
                # An empty namespace (not kfp's default "kubeflow") lets kfp.Client find the notebook's own
                # namespace on a multi-user cluster, and ignore ~/.config/kfp/context.json's.
                self._client = _Client(host=self.host, namespace=self.namespace or "", credentials=self._credentials)
            self.namespace = self.namespace or self._client.get_user_namespace() or None
        return self._client

    def redact(self, text: str) -> str:
        for token in self._credentials.tokens_sent if self._credentials else ():
            text = text.replace(token, "***")
        return text

    def explain(self, error: Exception) -> KfpError:
        """A :class:`KfpError` with a message a person can act on, for what ``kfp.Client`` raised."""
        if isinstance(error, KfpError):
            return error
        if isinstance(error, ApiException) and error.status:
            return self._http_error(error.status, _server_message(error, self.redact))
        return KfpConnectionError(
            f"cannot reach the KFP API at {self.host} (from {self.host_origin}; {_reason(error)}); {PORT_FORWARD_HINT}"
        )

    def _http_error(self, status: int, message: str) -> KfpError:
        where = f"the KFP API at {self.host}"
        if status == 401:
            if self.token is None:
                return KfpAuthError(
                    f"{where} needs a token (HTTP 401): set --token-file, KFP_TOKEN_FILE or KFP_TOKEN, "
                    f"or run where the Kubeflow ServiceAccount token is mounted ({DEFAULT_SA_TOKEN_PATH})"
                )
            return KfpAuthError(f"{where} rejected {self.token.describe()} (HTTP 401: {message}); is it expired?")
        if status == 403:
            scope = (
                f"namespace {self.namespace!r}" if self.namespace else "this request (no namespace given: --namespace)"
            )
            source = self.token.describe() if self.token else "no token"
            return KfpAuthError(f"{where}: {source} is not authorized for {scope} (HTTP 403: {message})")
        kind = KfpNotFound if status == 404 else KfpError
        return kind(f"{where} answered HTTP {status}: {message}")


def _reason(error: Exception) -> str:
    """Why a connection failed, in the words of the lowest error: ``[Errno 111] Connection refused``."""
    cause = error.reason if isinstance(error, ApiException) else getattr(error, "reason", None) or error
    return str(cause).rsplit(": ", 1)[-1] or type(cause).__name__


def _server_message(error: ApiException, redact) -> str:
    """The ``message`` of the server's ``googleRpcStatus`` answer, else the start of its body or the HTTP reason;
    ``redact`` runs on the whole body first, so no cut leaves part of a secret unrecognised."""
    body = error.body or b""  # kfp_server_api hands over the body decoded (str), or bytes
    text = redact(body.decode(errors="replace") if isinstance(body, bytes) else str(body))
    try:
        answer = json.loads(text or "{}")
    except ValueError:
        return text[:200] or str(error.reason)
    if not isinstance(answer, dict):
        return str(error.reason)
    return str(answer.get("message") or answer.get("error_message") or error.reason)


def normalize_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    parsed = urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise KfpError(f"host {host!r} is not an http(s) URL such as http://127.0.0.1:8080")
    if parsed.password:
        raise KfpError("the host URL must not carry credentials; use --token-file, KFP_TOKEN_FILE or KFP_TOKEN")
    return host


def token_source(token_file: str | None = None, environ=None) -> TokenSource | None:
    """The first of: --token-file, KFP_TOKEN_FILE, KFP_TOKEN, KF_PIPELINES_SA_TOKEN_PATH, the default SA path."""
    environ = os.environ if environ is None else environ
    if token_file:
        return TokenSource("--token-file", Path(token_file))
    if environ.get("KFP_TOKEN_FILE"):
        return TokenSource("KFP_TOKEN_FILE", Path(environ["KFP_TOKEN_FILE"]))
    if environ.get("KFP_TOKEN"):
        return TokenSource("KFP_TOKEN", value=environ["KFP_TOKEN"])
    if environ.get("KF_PIPELINES_SA_TOKEN_PATH"):
        return TokenSource("KF_PIPELINES_SA_TOKEN_PATH", Path(environ["KF_PIPELINES_SA_TOKEN_PATH"]))
    if Path(DEFAULT_SA_TOKEN_PATH).is_file():
        return TokenSource("the Kubeflow ServiceAccount token", Path(DEFAULT_SA_TOKEN_PATH))
    return None


def connect(host=None, namespace=None, token_file=None, environ=None) -> Connection:
    """A connection from flags, falling back to KFP_HOST, KFP_NAMESPACE and the token sources; nothing is sent yet."""
    environ = os.environ if environ is None else environ
    if host:
        origin = "--host"
    elif environ.get("KFP_HOST"):
        host, origin = environ["KFP_HOST"], "KFP_HOST"
    else:
        host, origin = DEFAULT_HOST, "the default host"
    return Connection(
        host=normalize_host(host),
        namespace=namespace or environ.get("KFP_NAMESPACE") or None,
        token=token_source(token_file, environ),
        host_origin=origin,
    )
