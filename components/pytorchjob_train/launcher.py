"""Run a Kubeflow training job as a pipeline step that never lies and never leaks pods.

``run_job`` creates the job, hands its handle to the caller at once, follows the master's log into the step's
log, reports phase changes, and returns only when the job Succeeded. Failure, the step's timeout, the
scheduling timeout and SIGTERM (the pipeline being terminated) raise. The job is deleted when the step ends,
whatever the reason.

A retried step finds the job of an earlier attempt under the same name: it re-attaches to one that is still
running (or Succeeded); one that is being deleted (``deletionTimestamp`` set) or Failed is waited out or
deleted, and a new one created in its place.

Every call to the API server retries transient errors (HTTP 429, 500, 502, 503, 504, connection resets and
timeouts) with exponential backoff, honouring Retry-After, for a bounded time (``RetryPolicy``); anything
else (403, 404, 422, ...) fails at once with ``KubernetesApiError``, which names the call, and for a 403 the
permission the step's ServiceAccount lacks.

What differs between job kinds lives in ``JobKind``: PyTorchJob (``kubeflow.org/v1``) here; a Kubeflow
Trainer v2 ``TrainJob`` is another ``JobKind`` with its own API path, condition types and pod labels.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import random
import re
import signal
import threading
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
OLD_JOB_DELETION_TIMEOUT_SECONDS = 600  # how long a job from an earlier attempt may take to be deleted


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


class JobFailed(RuntimeError):
    pass


class JobTimedOut(RuntimeError):
    pass


class JobNotStarted(JobTimedOut):
    """The job's pods did not start within the scheduling timeout."""


class StepTerminated(RuntimeError):
    pass


class KubernetesApiError(RuntimeError):
    """The API server refused a call for good, or kept failing it past the retry budget."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long transient API errors are retried: an API server restarting or shedding load recovers in minutes."""

    budget_seconds: float = 300.0
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0


@dataclass(frozen=True)
class JobHandle:
    kind: str
    name: str
    namespace: str
    uid: str
    attached: bool  # True when the job already existed (a retried step)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def job_name(run_id: str, task_name: str, task_id: str = "", prefix: str = "train") -> str:
    """A DNS-1035 label (a letter first, at most 63 characters) unique to the run, the task and the task's own id.

    Every iteration of a ParallelFor shares the run id and the task name; the task id (KFP's
    ``PIPELINE_TASK_ID_PLACEHOLDER``) tells them apart. All three stay the same when the task is retried.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{task_name}".lower()).strip("-")[:40].rstrip("-")
    key = "/".join([run_id, task_name, task_id] if task_id else [run_id, task_name])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


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


# --- following the master's log ---------------------------------------------------------------------------------

LOG_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def _sortable(timestamp: str) -> str | None:
    """The kubelet's RFC 3339 timestamp with its fraction padded to nanoseconds (it trims trailing zeros, so the
    raw strings do not sort); None for anything else."""
    match = LOG_TIMESTAMP.match(timestamp)
    return f"{match[1]}.{(match[2] or '').ljust(9, '0')}" if match else None


class _LogPosition:
    """Where a reopened log stream picks up, so that no line is echoed twice.

    The log is read with timestamps=true and a reopened stream starts again from the container's first line:
    lines older than the last one echoed are skipped, and of those that share its timestamp, as many as were
    echoed already. A new pod (another node, another clock) starts afresh.
    """

    def __init__(self) -> None:
        self.pod_uid: str | None = None
        self.last = ""
        self.echoed_at_last = 0
        self._skip_at_last = 0

    def open(self, pod_uid: str) -> None:
        if pod_uid != self.pod_uid:
            self.pod_uid, self.last, self.echoed_at_last = pod_uid, "", 0
        self._skip_at_last = self.echoed_at_last

    def new_text(self, line: str) -> str | None:
        """The line's text when it was not echoed yet, else None."""
        stamp, _, text = line.partition(" ")
        key = _sortable(stamp)
        if key is None:  # no timestamp to compare: better twice than never
            return line
        if key < self.last:
            return None
        if key == self.last:
            if self._skip_at_last:
                self._skip_at_last -= 1
                return None
            self.echoed_at_last += 1
            return text
        self.last, self.echoed_at_last, self._skip_at_last = key, 1, 0
        return text


class _LogFollower(threading.Thread):
    """Streams the master's log into ours, keeping the last lines for error messages.

    A stream that ends while the job is not finished (a log rotation, the API server or a proxy closing it, a
    container restart) is reopened; once the job is finished, the follower reads what is left and stops.
    """

    def __init__(
        self, client: KubernetesJobClient, name: str, namespace: str, poll: float, echo: Callable[[str], None]
    ):
        super().__init__(daemon=True, name=f"logs-{name}")
        self.client, self.name, self.namespace, self.poll, self.echo = client, name, namespace, poll, echo
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.stopped = threading.Event()
        self.job_finished = threading.Event()
        self.position = _LogPosition()

    def run(self) -> None:
        while not self.stopped.is_set():
            last_read = self.job_finished.is_set()
            try:
                pod = self.client.master_pod(self.name, self.namespace)
                if pod is not None:
                    self._read(pod)
            except Exception as error:  # the pod may not be up yet; logs are best effort
                log.debug("log follow of %s: %s", self.name, error)
            if last_read:
                return
            self.stopped.wait(self.poll)

    def _read(self, pod) -> None:
        self.position.open(pod.metadata.uid)
        for line in self.client.follow_log(pod.metadata.name, self.namespace):
            text = self.position.new_text(line)
            if text is not None:
                self.tail.append(text)
                self.echo(f"[{pod.metadata.name}] {text}")
            if self.stopped.is_set():
                return

    def finish(self, timeout: float) -> None:
        """The job is finished: let the last lines arrive, for at most ``timeout`` seconds."""
        self.job_finished.set()
        self.join(timeout=timeout)


# --- SIGTERM ----------------------------------------------------------------------------------------------------


class _SignalGuard:
    """Turns SIGTERM (the run being terminated) into StepTerminated in the main thread, except:

    - while held (``held()``, around the request that creates the job) the signal waits until the reply is in:
      interrupted, the create could still succeed on the server after the cleanup ran, and the job would leak;
    - once disarmed (the cleanup), a signal is only noted: a second SIGTERM must not cut the deletion short.
    """

    def __init__(self, what: str):
        self.what = what
        self.received: int | None = None
        self._holding = False
        self._armed = True
        self._previous = None

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        if self.received is not None and error_type is None:  # the signal came during the cleanup of a success
            raise self._terminated()

    def _on_signal(self, signum, _frame) -> None:
        self.received = signum
        if self._armed and not self._holding:
            raise self._terminated()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if self.received is not None and self._armed:
                raise self._terminated()

    def disarm(self) -> None:
        self._armed = False

    def _terminated(self) -> StepTerminated:
        return StepTerminated(f"step received signal {self.received}; {self.what} is being deleted")


# --- the step ---------------------------------------------------------------------------------------------------


def run_job(
    client: KubernetesJobClient,
    manifest: dict[str, Any],
    timeout_seconds: float,
    on_created: Callable[[JobHandle], None] = lambda handle: None,
    poll_seconds: float = 5.0,
    echo: Callable[[str], None] = print,
    scheduling_timeout_seconds: float = 600.0,
) -> JobHandle:
    """Create (or re-attach to) the job, wait for Succeeded, delete it. See the module docstring.

    ``timeout_seconds`` bounds the whole step; ``scheduling_timeout_seconds`` how long the job may wait for its
    pods to start (the clock stops while the job is Suspended), after which the pods' own reasons are reported.
    """
    for parameter, value in (
        ("timeout_seconds", timeout_seconds),
        ("scheduling_timeout_seconds", scheduling_timeout_seconds),
    ):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{parameter} must be > 0 seconds, got {value!r}")
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    kind = client.kind
    deadline = time.monotonic() + timeout_seconds
    follower = None
    job_may_exist = False
    with _SignalGuard(f"{kind.kind} {namespace}/{name}") as guard:
        try:
            job_may_exist = True  # from here on the job may exist, even if create() raises (e.g. a lost reply)
            job, created = _create_or_replace(client, manifest, guard, echo, deadline, poll_seconds)
            handle = JobHandle(kind.kind, name, namespace, job.get("metadata", {}).get("uid", ""), attached=not created)
            on_created(handle)
            echo(f"{'created' if created else 're-attached to existing'} {kind.kind} {namespace}/{name}")
            follower = _LogFollower(client, name, namespace, poll_seconds, echo)
            follower.start()
            _wait_for_success(client, job, follower, echo, deadline, timeout_seconds, scheduling_timeout_seconds)
            return handle
        finally:
            if follower is not None:
                follower.stopped.set()
            guard.disarm()
            if job_may_exist:
                _clean_up(client, name, namespace, echo, confirm=guard.received is not None)


def _create_or_replace(
    client: KubernetesJobClient,
    manifest: dict[str, Any],
    guard: _SignalGuard,
    echo: Callable[[str], None],
    deadline: float,
    poll_seconds: float,
) -> tuple[dict[str, Any], bool]:
    """(job, created): POST the job; when one of its name exists, attach to it, or replace one that an earlier
    attempt left being deleted or Failed."""
    kind = client.kind
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    while True:
        if time.monotonic() >= deadline:
            raise JobTimedOut(f"{kind.kind} {namespace}/{name} could not be created within the step's timeout_seconds")
        job = client.create(manifest, hold_signals=guard.held)
        if job is not None:
            return job, True
        existing = client.get(name, namespace)
        if existing is None:
            continue  # it went between the POST and the GET
        deleting_since = existing.get("metadata", {}).get("deletionTimestamp")
        phase, reason, message = kind.phase(existing)
        if deleting_since:
            echo(
                f"{kind.kind} {namespace}/{name} of an earlier attempt is being deleted (since {deleting_since}); "
                "waiting for it to go before creating a new one"
            )
        elif phase == kind.failed:
            echo(
                f"{kind.kind} {namespace}/{name} of an earlier attempt Failed ({reason}: {message}); "
                "deleting it to start afresh"
            )
            client.delete(name, namespace)
        else:
            return existing, False
        _wait_until_gone(
            client, name, namespace, min(deadline, time.monotonic() + OLD_JOB_DELETION_TIMEOUT_SECONDS), poll_seconds
        )


def _wait_until_gone(client: KubernetesJobClient, name: str, namespace: str, until: float, poll_seconds: float) -> None:
    while (job := client.get(name, namespace)) is not None:
        if time.monotonic() >= until:
            metadata = job.get("metadata", {})
            raise JobTimedOut(
                f"{client.kind.kind} {namespace}/{name} of an earlier attempt is still being deleted (since "
                f"{metadata.get('deletionTimestamp', '?')}, finalizers {metadata.get('finalizers', [])}): its pods "
                "may be stuck terminating on a lost node; a new job cannot take its name until it is gone"
            )
        time.sleep(max(0.0, min(poll_seconds, until - time.monotonic())))


class _SchedulingClock:
    """How long the job has waited for its pods to start: until it first reports Running (or Restarting, or
    finishes). A Suspended job (held by Kueue, or by hand) has no pods to schedule: the clock stops while it is
    suspended, and starts afresh when it is resumed."""

    def __init__(self, kind: JobKind, limit: float):
        self.kind, self.limit = kind, limit
        self.waiting_since: float | None = time.monotonic()
        self.started = False

    def expired(self, phase: str) -> bool:
        if self.started or phase in (*self.kind.started, self.kind.succeeded, self.kind.failed):
            self.started = True
            return False
        if phase == self.kind.suspended:
            self.waiting_since = None
            return False
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        return time.monotonic() - self.waiting_since >= self.limit


def _wait_for_success(
    client: KubernetesJobClient,
    job: dict[str, Any],
    follower: _LogFollower,
    echo: Callable[[str], None],
    deadline: float,
    timeout_seconds: float,
    scheduling_timeout_seconds: float,
) -> None:
    kind = client.kind
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    poll_seconds = follower.poll
    scheduling = _SchedulingClock(kind, scheduling_timeout_seconds)
    last_phase = None
    while True:
        phase, reason, message = kind.phase(job)
        if phase != last_phase:
            echo(f"{kind.kind} {name}: {phase}" + (f" ({reason}: {message})" if reason or message else ""))
            last_phase = phase
        if phase == kind.succeeded:
            follower.finish(timeout=poll_seconds * 2)  # let the last log lines arrive
            return
        if phase == kind.failed:
            follower.finish(timeout=poll_seconds * 2)
            raise JobFailed(
                f"{kind.kind} {namespace}/{name} failed: {reason or 'no reason given'}: {message or 'no message'}"
                + _tail(follower)
            )
        if scheduling.expired(phase):
            raise JobNotStarted(_not_started_report(client, name, namespace, scheduling_timeout_seconds))
        if time.monotonic() >= deadline:
            raise JobTimedOut(
                f"{kind.kind} {namespace}/{name} did not succeed within timeout_seconds={timeout_seconds:g} "
                f"(last phase {phase}); it is being deleted" + _tail(follower)
            )
        time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
        job = client.get(name, namespace)
        if job is None:
            raise JobFailed(
                f"{kind.kind} {namespace}/{name} disappeared while the step waited for it: someone (or something) "
                "else deleted it" + _tail(follower)
            )


def _not_started_report(client: KubernetesJobClient, name: str, namespace: str, limit: float) -> str:
    """Why the job's pods have not started, in the pods' own words: scheduler and kubelet reasons."""
    what = f"{client.kind.kind} {namespace}/{name}"
    head = f"{what} did not start within scheduling_timeout_seconds={limit:g}; it is being deleted. "
    try:
        pods = client.pods(name, namespace)
    except StepTerminated:
        raise
    except Exception as error:  # the report is a courtesy; the timeout is the error
        return head + f"Its pods could not be listed: {error}"
    if not pods:
        return head + (
            "No pods were created: is the Training Operator running, and may it create pods in this namespace? "
            f"See `kubectl describe {client.kind.plural}.{client.kind.group} -n {namespace} {name}`."
        )
    lines = [
        f"  {pod.metadata.name} ({pod.status.phase}): {'; '.join(pod_reasons(pod)) or 'no reason reported'}"
        for pod in sorted(pods, key=lambda pod: pod.metadata.name)
    ]
    return (
        head
        + "Its pods:\n"
        + "\n".join(lines)
        + "\nFree or add the capacity they wait for, fix what keeps them from starting, or raise "
        "scheduling_timeout_seconds (a cluster autoscaler may need minutes to add a node)."
    )


def pod_reasons(pod) -> list[str]:
    """What keeps a pod (``V1Pod``) from running: its scheduling condition, its status reason, waiting or failed
    containers. E.g. "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."."""
    status = pod.status
    reasons = []
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            reasons.append(f"{condition.reason or 'not scheduled'}: {condition.message or 'no message'}")
    if status.reason:
        reasons.append(f"{status.reason}: {status.message or 'no message'}")
    for container in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        state = container.state
        if state and state.waiting:
            detail = f": {state.waiting.message}" if state.waiting.message else ""
            reasons.append(f"container {container.name} {state.waiting.reason}{detail}")
        elif state and state.terminated and state.terminated.exit_code:
            terminated = state.terminated
            reasons.append(f"container {container.name} {terminated.reason} (exit code {terminated.exit_code})")
    return reasons


def _clean_up(
    client: KubernetesJobClient, name: str, namespace: str, echo: Callable[[str], None], confirm: bool
) -> None:
    """Delete the job (its pods first). After a signal, look it up by name once more, so that a job whose create
    raced the deletion is deleted too, and say what became of it."""
    what = f"{client.kind.kind} {namespace}/{name}"
    try:
        if client.delete(name, namespace):
            echo(f"deleted {what}")
        if not confirm:
            return
        job = client.get(name, namespace)
        if job is None:
            echo(f"confirmed: no {what} is left")
        elif job.get("metadata", {}).get("deletionTimestamp"):
            echo(f"confirmed: {what} is being deleted, its pods first")
        elif client.delete(name, namespace):
            echo(f"deleted {what}, which appeared after the first delete")
    except Exception as error:  # never hide the step's own error behind a cleanup error
        echo(f"WARNING: could not delete {what}: {error}")


def _tail(follower: _LogFollower | None) -> str:
    if follower is None or not follower.tail:
        return ""
    return "\nlast lines of the master's log:\n" + "\n".join(follower.tail)
