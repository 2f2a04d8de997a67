"""Calls to the Kubernetes API server, retried when the failure is the system's.

``KubernetesApi.call`` runs any call of the official Kubernetes Python client (custom objects, core,
apps, ...): transient errors (HTTP 429, 500, 502, 503, 504, connection resets and timeouts) are retried
with exponential backoff, honouring Retry-After, for a bounded time (``RetryPolicy``); anything else
(403, 404, 422, ...) fails at once with ``KubernetesApiError``, which names the call, and for a 403 the
RBAC rule the step's ServiceAccount lacks. Clients of particular resources (``jobs.KubernetesJobClient``)
build on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_SECONDS = 60  # one API call; the API server gives up on a request after 60 s itself


class StepTerminated(RuntimeError):
    """The step received SIGTERM (the run being terminated): raised inside a call, never retried."""


class KubernetesApiError(RuntimeError):
    """The API server refused a call for good, or kept failing it past the retry budget."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long transient API errors are retried: an API server restarting or shedding load recovers in minutes."""

    budget_seconds: float = 300.0
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0


def current_namespace() -> str:
    """The namespace this pod runs in (its service account's), for objects created beside it."""
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    raise RuntimeError(f"cannot tell this pod's namespace: {NAMESPACE_FILE} is missing; pass the namespace explicitly")


def load_api_client():
    """A ``kubernetes.client.ApiClient`` with in-cluster service-account credentials, or the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def http_status(error: BaseException) -> int | None:
    from kubernetes.client.exceptions import ApiException

    return error.status if isinstance(error, ApiException) else None


def is_transient(error: BaseException) -> bool:
    """An error worth retrying: the API server overloaded or restarting, or the connection to it lost."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, SSLError
    from urllib3.exceptions import TimeoutError as RequestTimeout

    status = http_status(error)
    if status is not None:
        return status in TRANSIENT_STATUSES
    if isinstance(error, MaxRetryError):  # urllib3 gave up retrying a reset, a refusal or a 429/503
        return not isinstance(error.reason, SSLError)
    return isinstance(error, (ProtocolError, RequestTimeout, NewConnectionError, ConnectionError, TimeoutError))


def describe(error: BaseException) -> str:
    """The error in one line: HTTP status, reason and the API server's own message; never the request body."""
    status = http_status(error)
    if status is None:
        return f"{type(error).__name__}: {error}"
    message = server_message(error)
    return f"HTTP {status} {error.reason}" + (f": {message}" if message else "")


def _retry_after(error: BaseException) -> float:
    headers = getattr(error, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0))
    except (TypeError, ValueError):  # an HTTP date: rare from the API server; back off as usual
        return 0.0


class KubernetesApi:
    """An ``ApiClient`` (``api_client``) and the retry policy every call through it follows.

    Subclasses add the API objects they need (``kubernetes.client.CoreV1Api(self.api_client)``, ``AppsV1Api``,
    ``CustomObjectsApi``, ...) and send each request through ``call``.
    """

    def __init__(self, api_client, retry: RetryPolicy = RetryPolicy()):
        self.api_client = api_client
        self.retry = retry

    def call(
        self,
        verb: str,
        resource: str,
        namespace: str,
        operation: Callable[[], T],
        answers: dict[int, Any] | None = None,
        hold_signals: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> T:
        """``operation()``, retrying transient errors with exponential backoff for ``retry.budget_seconds``.

        ``verb`` and ``resource`` are what the RBAC authorizer checks (``create``, ``pytorchjobs.kubeflow.org``,
        ``deployments.apps``, ``pods/log``): they name the call in errors and, for a 403, the missing rule. An HTTP
        status in ``answers`` returns its value (404 -> None for "no such object"); any other error raises a
        ``KubernetesApiError``. ``hold_signals`` wraps each attempt, not the waits between.
        """
        answers = answers or {}
        what = f"{verb} {resource} in namespace {namespace}"
        started = time.monotonic()
        delay = self.retry.first_delay_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                with hold_signals():
                    return operation()
            except StepTerminated:
                raise
            except Exception as error:
                if http_status(error) in answers:
                    return answers[http_status(error)]
                if not is_transient(error):
                    raise KubernetesApiError(persistent_message(what, verb, resource, namespace, error)) from error
                elapsed = time.monotonic() - started
                if elapsed >= self.retry.budget_seconds:
                    raise KubernetesApiError(
                        f"could not {what}: {describe(error)}; still failing after {attempt} attempts over "
                        f"{elapsed:.0f} s (transient errors are retried for {self.retry.budget_seconds:g} s)"
                    ) from error
                wait = max(delay * random.uniform(0.5, 1.0), _retry_after(error))  # jitter spreads out the clients
                wait = min(wait, self.retry.budget_seconds - elapsed)
                log.warning("%s: %s; retrying in %.1f s (attempt %d)", what, describe(error), wait, attempt)
                time.sleep(wait)
                delay = min(delay * 2, self.retry.max_delay_seconds)


def server_message(error: BaseException) -> str:
    """The API server's own message in a refusal (the ``message`` of its Status), or ""."""
    try:
        return str(json.loads(getattr(error, "body", None) or "{}").get("message", ""))
    except (ValueError, AttributeError):
        return ""


def is_webhook_refusal(error: BaseException) -> bool:
    """An admission webhook refused the request. A validating webhook built on controller-runtime (Kubeflow
    Trainer's) refuses with 403 Forbidden, like RBAC does: only the message tells them apart."""
    return http_status(error) is not None and server_message(error).startswith("admission webhook")


def persistent_message(what: str, verb: str, resource: str, namespace: str, error: BaseException) -> str:
    """What failed, in the API server's words; for a 403 from RBAC, the rule that would allow it."""
    if is_webhook_refusal(error):
        return f"could not {what}: the cluster's admission webhook refused it: {server_message(error)}"
    if http_status(error) == 403:
        plural, _, group = resource.partition(".")
        return (
            f"could not {what}: the step's ServiceAccount lacks the permission to {verb} {resource} "
            f"({describe(error)}); grant it with a Role in namespace {namespace} (apiGroups [{group!r}], "
            f"resources [{plural!r}], verbs [{verb!r}]) and a RoleBinding"
        )
    return f"could not {what}: {describe(error)}"
