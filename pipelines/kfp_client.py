"""A small REST client for the Kubeflow Pipelines v2beta1 API: connection, credentials and clear errors.

Host, namespace and token come from flags or the environment (see :func:`connect`). The token is
sent only as an ``Authorization: Bearer`` header; it is never printed, logged or put in an error
message, and a token file is read again for every request (ServiceAccount tokens rotate).
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

import requests

DEFAULT_HOST = "http://127.0.0.1:8080"
DEFAULT_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
API = "/apis/v2beta1"
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


class KfpApiError(KfpError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class KfpNotFound(KfpApiError):
    pass


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


@dataclass
class Connection:
    host: str
    namespace: str | None = None
    token: TokenSource | None = None
    host_origin: str = "--host"
    timeout: float = 30.0


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
    """A connection from flags, falling back to KFP_HOST, KFP_NAMESPACE and the token sources."""
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


def close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    if names:
        return "existing pipelines: " + ", ".join(sorted(names)[:20])
    return "there are no pipelines yet (upload one with `kfp-torch upload`)"


def name_filter(key: str, value: str) -> str:
    """A JSON ``Filter`` for ``key == value`` (field names as in the API's JSON)."""
    return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "string_value": value}]})


class KfpClient:
    def __init__(self, connection: Connection, session: requests.Session | None = None):
        self.connection = connection
        self.session = session or requests.Session()
        self._secrets: set[str] = set()

    # -- transport ---------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _headers(self) -> dict:
        headers = {"Accept": "application/json"}
        if self.connection.token is not None:
            token = self.connection.token.read()
            self._secrets.add(token)
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def request(self, method: str, path: str, *, params=None, body=None, files=None) -> dict:
        url = self.connection.host + API + path
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=body,
                files=files,
                headers=self._headers(),
                timeout=self.connection.timeout,
            )
        except requests.exceptions.RequestException as error:
            reason = type(error).__name__
            raise KfpConnectionError(
                f"cannot reach the KFP API at {self.connection.host} (from {self.connection.host_origin}; "
                f"{method} {API}{path} failed: {reason}); {PORT_FORWARD_HINT}"
            ) from None
        if response.status_code >= 400:
            raise self._error(method, path, response)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise KfpApiError(
                f"{method} {API}{path} answered HTTP {response.status_code} with something that is not JSON "
                f"(is {self.connection.host} the KFP API or its UI?)",
                response.status_code,
            ) from None

    def _error(self, method: str, path: str, response: requests.Response) -> KfpError:
        try:
            message = str(response.json().get("message", "")) or response.reason
        except ValueError:
            message = response.text[:200] or response.reason
        message = self.redact(message)
        status = response.status_code
        where = f"the KFP API at {self.connection.host}"
        if status == 401:
            if self.connection.token is None:
                return KfpAuthError(
                    f"{where} needs a token (HTTP 401): set --token-file, KFP_TOKEN_FILE or KFP_TOKEN, "
                    f"or run where the Kubeflow ServiceAccount token is mounted ({DEFAULT_SA_TOKEN_PATH})"
                )
            return KfpAuthError(
                f"{where} rejected {self.connection.token.describe()} (HTTP 401: {message}); is it expired?"
            )
        if status == 403:
            namespace = self.connection.namespace
            scope = f"namespace {namespace!r}" if namespace else "this request (no namespace given: --namespace)"
            source = self.connection.token.describe() if self.connection.token else "no token"
            return KfpAuthError(f"{where}: {source} is not authorized for {scope} (HTTP 403: {message})")
        kind = KfpNotFound if status == 404 else KfpApiError
        return kind(f"{method} {API}{path} failed: HTTP {status}: {message}", status)

    def _list(self, path: str, key: str, params: dict | None = None) -> list[dict]:
        items: list[dict] = []
        params = dict(params or {}, page_size=100)
        while True:
            answer = self.request("GET", path, params=params)
            items += answer.get(key, [])
            token = answer.get("next_page_token")
            if not token:
                return items
            params["page_token"] = token

    # -- pipelines -------------------------------------------------------------------------
    def pipeline_by_name(self, name: str) -> dict | None:
        """The pipeline named ``name`` in the namespace, else a shared one of that name, else None."""
        namespaces = [self.connection.namespace, None] if self.connection.namespace else [None]
        for namespace in namespaces:
            try:
                return self.request("GET", f"/pipelines/names/{quote(name, safe='')}", params={"namespace": namespace})
            except KfpNotFound:
                continue
        return None

    def list_pipelines(self) -> list[dict]:
        return self._list("/pipelines", "pipelines", {"namespace": self.connection.namespace})

    def find_pipeline(self, name: str) -> dict:
        pipeline = self.pipeline_by_name(name)
        if pipeline is None:
            names = [p.get("name") or p.get("display_name", "") for p in self.list_pipelines()]
            raise KfpNotFound(f"no pipeline named {name!r}; {close_names(name, names)}", 404)
        return pipeline

    def create_pipeline(self, name: str, description: str = "", shared: bool = False) -> dict:
        body = {"name": name, "display_name": name}
        if description:
            body["description"] = description
        if self.connection.namespace and not shared:
            body["namespace"] = self.connection.namespace
        return self.request("POST", "/pipelines", body=body)

    def list_versions(self, pipeline_id: str) -> list[dict]:
        return self._list(f"/pipelines/{pipeline_id}/versions", "pipeline_versions")

    def latest_version(self, pipeline_id: str) -> dict | None:
        answer = self.request(
            "GET", f"/pipelines/{pipeline_id}/versions", params={"page_size": 1, "sort_by": "created_at desc"}
        )
        versions = answer.get("pipeline_versions") or []
        return versions[0] if versions else None

    def get_version(self, pipeline_id: str, version_id: str) -> dict:
        return self.request("GET", f"/pipelines/{pipeline_id}/versions/{version_id}")

    def upload_version(self, pipeline_id: str, name: str, data: bytes, filename: str, description: str = "") -> dict:
        params = {"name": name, "display_name": name, "pipelineid": pipeline_id, "description": description or None}
        files = {"uploadfile": (filename, data, "application/x-yaml")}
        return self.request("POST", "/pipelines/upload_version", params=params, files=files)

    # -- experiments -----------------------------------------------------------------------
    def experiment(self, name: str) -> dict:
        """The experiment of that display name in the namespace, created when there is none."""
        found = self.request(
            "GET",
            "/experiments",
            params={"filter": name_filter("display_name", name), "namespace": self.connection.namespace},
        ).get("experiments", [])
        found = [e for e in found if e.get("display_name") == name]
        if found:
            return found[0]
        body = {"display_name": name}
        if self.connection.namespace:
            body["namespace"] = self.connection.namespace
        return self.request("POST", "/experiments", body=body)

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, body: dict) -> dict:
        return self.request("POST", "/runs", body=body)

    def get_run(self, run_id: str) -> dict:
        return self.request("GET", f"/runs/{run_id}")

    # -- recurring runs --------------------------------------------------------------------
    def create_recurring_run(self, body: dict) -> dict:
        return self.request("POST", "/recurringruns", body=body)

    def list_recurring_runs(self, experiment_id: str | None = None) -> list[dict]:
        params = {"namespace": self.connection.namespace, "experiment_id": experiment_id}
        # The one list response whose field is camelCase in the API itself (the proto field is so named).
        return self._list("/recurringruns", "recurringRuns", params)

    def get_recurring_run(self, recurring_run_id: str) -> dict:
        return self.request("GET", f"/recurringruns/{recurring_run_id}")

    def enable_recurring_run(self, recurring_run_id: str) -> None:
        self.request("POST", f"/recurringruns/{recurring_run_id}:enable")

    def disable_recurring_run(self, recurring_run_id: str) -> None:
        self.request("POST", f"/recurringruns/{recurring_run_id}:disable")

    def delete_recurring_run(self, recurring_run_id: str) -> None:
        self.request("DELETE", f"/recurringruns/{recurring_run_id}")
