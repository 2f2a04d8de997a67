"""The few Kubernetes API calls the launcher makes, retried when the failure is the system's.

Every call to the API server retries transient errors (HTTP 429, 500, 502, 503, 504, connection resets and
timeouts) with exponential backoff, honouring Retry-After, for a bounded time (``RetryPolicy``); anything
else (403, 404, 422, ...) fails at once with ``KubernetesApiError``, which names the call, and for a 403 the
permission the step's ServiceAccount lacks.

What differs between job kinds lives in ``JobKind``: PyTorchJob (``kubeflow.org/v1``) here; a Kubeflow
Trainer v2 ``TrainJob`` is another ``JobKind`` with its own API path, condition types and pod labels.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from components.pytorchjob_train.manifest import CONTAINER_NAME

log = logging.getLogger(__name__)

T = TypeVar("T")
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_SECONDS = 60  # one API call; the API server gives up on a request after 60 s itself
LOG_SILENCE_SECONDS = 300  # a log stream silent this long is reopened: a dead connection never says it is dead


@dataclass(frozen=True)
class JobKind:
    group: str
    version: str
    plural: str
    kind: str
    succeeded: str  # condition type that means success
    failed: str  # condition type that means failure
    master_selector: str  # label selector template for the pod whose log is followed; {name} is the job
    pods_selector: str  # label selector template for all the job's pods; {name} is the job
    log_container: str  # the container of the master pod whose log is followed
    started: tuple[str, ...] = ("Running", "Restarting")  # condition types that mean the pods got to run
    suspended: str = "Suspended"  # condition type of a job held back (by Kueue, or by hand): it has no pods

    def phase(self, job: dict[str, Any]) -> tuple[str, str, str]:
        """(phase, reason, message) from the newest true condition; "Pending" before any.

        Newest by lastTransitionTime, ties (the API keeps whole seconds) broken by list position: the Training
        Operator moves a condition it changes to the end of the list.
        """
        conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
        for wanted in (self.failed, self.succeeded):  # terminal conditions win
            for condition in conditions:
                if condition.get("type") == wanted:
                    return wanted, condition.get("reason", ""), condition.get("message", "")
        if not conditions:
            return "Pending", "", ""
        _, newest = max(enumerate(conditions), key=lambda item: (item[1].get("lastTransitionTime") or "", item[0]))
        return newest.get("type", "Unknown"), newest.get("reason", ""), newest.get("message", "")


PYTORCHJOB = JobKind(
    group="kubeflow.org",
    version="v1",
    plural="pytorchjobs",
    kind="PyTorchJob",
    succeeded="Succeeded",
    failed="Failed",
    master_selector="training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master",
    pods_selector="training.kubeflow.org/job-name={name}",
    log_container=CONTAINER_NAME,
)


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
    """The namespace this pod runs in (its service account's), for jobs created beside it."""
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    raise RuntimeError(f"cannot tell this pod's namespace: {NAMESPACE_FILE} is missing; pass the namespace explicitly")


# --- talking to the API server ---------------------------------------------------------------------------------


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
    message = ""
    try:
        message = json.loads(error.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status} {error.reason}" + (f": {message}" if message else "")


def _retry_after(error: BaseException) -> float:
    headers = getattr(error, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0))
    except (TypeError, ValueError):  # an HTTP date: rare from the API server; back off as usual
        return 0.0


class KubernetesJobClient:
    """The few calls the launcher makes, through the official Kubernetes Python client."""

    def __init__(self, api_client, kind: JobKind = PYTORCHJOB, retry: RetryPolicy = RetryPolicy()):
        from kubernetes import client

        self.kind = kind
        self.retry = retry
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def from_environment(cls, kind: JobKind = PYTORCHJOB) -> KubernetesJobClient:
        """In-cluster service-account credentials, or the local kubeconfig."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient(), kind)

    def _path(self, namespace: str) -> dict[str, str]:
        return {
            "group": self.kind.group,
            "version": self.kind.version,
            "namespace": namespace,
            "plural": self.kind.plural,
        }

    def _call(
        self,
        verb: str,
        resource: str,
        namespace: str,
        operation: Callable[[], T],
        answers: dict[int, Any] | None = None,
        hold_signals: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> T:
        """``operation()``, retrying transient errors with exponential backoff for ``retry.budget_seconds``.

        An HTTP status in ``answers`` returns its value (404 -> None for "no such job"); any other error raises a
        ``KubernetesApiError`` that names the call. ``hold_signals`` wraps each attempt, not the waits between.
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
                    raise KubernetesApiError(_persistent_message(what, verb, resource, namespace, error)) from error
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

    def create(
        self,
        manifest: dict[str, Any],
        hold_signals: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> dict[str, Any] | None:
        """Create the job; None when one of its name exists already (HTTP 409: a retried step, or our own create
        sent again after its reply was lost)."""
        namespace = manifest["metadata"]["namespace"]
        return self._call(
            "create",
            self._resource(),
            namespace,
            lambda: self.custom.create_namespaced_custom_object(
                body=manifest, **self._path(namespace), _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
            answers={409: None},
            hold_signals=hold_signals,
        )

    def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The job, or None when there is none of that name (HTTP 404)."""
        return self._call(
            "get",
            self._resource(),
            namespace,
            lambda: self.custom.get_namespaced_custom_object(
                name=name, **self._path(namespace), _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
            answers={404: None},
        )

    def delete(self, name: str, namespace: str) -> bool:
        """Delete the job and, in the foreground, its pods first. False when it was already gone."""
        deleted = self._call(
            "delete",
            self._resource(),
            namespace,
            lambda: self.custom.delete_namespaced_custom_object(
                name=name,
                body={"propagationPolicy": "Foreground"},
                **self._path(namespace),
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            ),
            answers={404: None},
        )
        return deleted is not None

    def pods(self, name: str, namespace: str, selector: str = "") -> list:
        """The job's pods (``V1Pod``), or those matching ``selector`` (a template with {name})."""
        label_selector = (selector or self.kind.pods_selector).format(name=name)
        listed = self._call(
            "list",
            "pods",
            namespace,
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
        )
        return listed.items

    def master_pod(self, name: str, namespace: str):
        """The master pod (``V1Pod``) once its container has started, preferring a running one; else None."""
        pods = [
            pod
            for pod in self.pods(name, namespace, self.kind.master_selector)
            if pod.status
            and pod.status.phase in ("Running", "Succeeded", "Failed")
            and not pod.metadata.deletion_timestamp
        ]
        pods.sort(key=lambda pod: pod.status.phase != "Running")
        return pods[0] if pods else None

    def follow_log(self, pod: str, namespace: str) -> Iterator[str]:
        """Yield the log lines of the pod's training container as they come, each after its timestamp, until the
        container ends or the API server ends the stream."""
        response = self._call(
            "get",
            "pods/log",
            namespace,
            lambda: self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=self.kind.log_container,  # required as soon as the pod has another container
                follow=True,
                timestamps=True,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT_SECONDS, LOG_SILENCE_SECONDS),
            ),
        )
        try:
            buffer = b""
            for chunk in response.stream(1024):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buffer:
                yield buffer.decode(errors="replace")
        finally:
            response.release_conn()

    def _resource(self) -> str:
        return f"{self.kind.plural}.{self.kind.group}"


def _persistent_message(what: str, verb: str, resource: str, namespace: str, error: BaseException) -> str:
    """What failed, in the API server's words; for a 403, the RBAC rule that would allow it."""
    if http_status(error) == 403:
        plural, _, group = resource.partition(".")
        return (
            f"could not {what}: the step's ServiceAccount lacks the permission to {verb} {resource} "
            f"({describe(error)}); grant it with a Role in namespace {namespace} (apiGroups [{group!r}], "
            f"resources [{plural!r}], verbs [{verb!r}]) and a RoleBinding"
        )
    return f"could not {what}: {describe(error)}"
