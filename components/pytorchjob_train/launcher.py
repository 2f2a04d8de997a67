"""Run a Kubeflow training job as a pipeline step that never lies and never leaks pods.

``run_job`` creates the job (or re-attaches to it when a retried step finds it
already there), hands its handle to the caller at once, follows the master's
log into the step's log, reports phase changes, and returns only when the job
Succeeded. Failure, timeout and SIGTERM (the pipeline being terminated) raise.
The job is deleted when the step ends, whatever the reason.

What differs between job kinds lives in ``JobKind``: PyTorchJob
(``kubeflow.org/v1``) here; a Kubeflow Trainer v2 ``TrainJob`` is another
``JobKind`` with its own API path, condition types and pod labels.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class JobKind:
    group: str
    version: str
    plural: str
    kind: str
    succeeded: str  # condition type that means success
    failed: str  # condition type that means failure
    master_selector: str  # label selector template for the pod whose log is followed; {name} is the job

    def phase(self, job: dict[str, Any]) -> tuple[str, str, str]:
        """(phase, reason, message) from the newest true condition; "Pending" before any."""
        conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
        for wanted in (self.failed, self.succeeded):  # terminal conditions win
            for condition in conditions:
                if condition.get("type") == wanted:
                    return wanted, condition.get("reason", ""), condition.get("message", "")
        if not conditions:
            return "Pending", "", ""
        last = conditions[-1]
        return last.get("type", "Unknown"), last.get("reason", ""), last.get("message", "")


PYTORCHJOB = JobKind(
    group="kubeflow.org",
    version="v1",
    plural="pytorchjobs",
    kind="PyTorchJob",
    succeeded="Succeeded",
    failed="Failed",
    master_selector="training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master",
)


class JobFailed(RuntimeError):
    pass


class JobTimedOut(RuntimeError):
    pass


class StepTerminated(RuntimeError):
    pass


@dataclass(frozen=True)
class JobHandle:
    kind: str
    name: str
    namespace: str
    uid: str
    attached: bool  # True when the job already existed (a retried step)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def job_name(run_id: str, task_name: str, prefix: str = "train") -> str:
    """A DNS-1123 name unique to the pipeline run and task, stable across retries of the task."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{task_name}".lower()).strip("-")[:40].rstrip("-")
    digest = hashlib.sha256(f"{run_id}/{task_name}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def current_namespace() -> str:
    """The namespace this pod runs in (its service account's), for jobs created beside it."""
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    raise RuntimeError(f"cannot tell this pod's namespace: {NAMESPACE_FILE} is missing; pass the namespace explicitly")


class KubernetesJobClient:
    """The few calls the launcher makes, through the official Kubernetes Python client."""

    def __init__(self, api_client, kind: JobKind = PYTORCHJOB):
        from kubernetes import client

        self.kind = kind
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

    def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the job; on 409 (it exists: a retried step) return the existing one. (job, created)"""
        from kubernetes.client.exceptions import ApiException

        namespace = manifest["metadata"]["namespace"]
        try:
            return self.custom.create_namespaced_custom_object(body=manifest, **self._path(namespace)), True
        except ApiException as error:
            if error.status == 409:
                return self.get(manifest["metadata"]["name"], namespace), False
            raise

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(name=name, **self._path(namespace))

    def delete(self, name: str, namespace: str) -> bool:
        """Delete the job and, in the foreground, its pods. False when it was already gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                name=name, body={"propagationPolicy": "Foreground"}, **self._path(namespace)
            )
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def master_pod(self, name: str, namespace: str) -> str | None:
        pods = self.core.list_namespaced_pod(namespace, label_selector=self.kind.master_selector.format(name=name))
        running = [p for p in pods.items if p.status and p.status.phase in ("Running", "Succeeded", "Failed")]
        return running[0].metadata.name if running else None

    def follow_log(self, pod: str, namespace: str):
        """Yield the pod's log lines as they come, until the container ends."""
        response = self.core.read_namespaced_pod_log(pod, namespace, follow=True, _preload_content=False)
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


class _LogFollower(threading.Thread):
    """Streams the master's log into ours, keeping the last lines for error messages."""

    def __init__(
        self, client: KubernetesJobClient, name: str, namespace: str, poll: float, echo: Callable[[str], None]
    ):
        super().__init__(daemon=True, name=f"logs-{name}")
        self.client, self.name, self.namespace, self.poll, self.echo = client, name, namespace, poll, echo
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                pod = self.client.master_pod(self.name, self.namespace)
                if pod:
                    for line in self.client.follow_log(pod, self.namespace):
                        self.tail.append(line)
                        self.echo(f"[{pod}] {line}")
                        if self.stopped.is_set():
                            return
                    return  # the container ended; its whole log was read
            except Exception as error:  # the pod may not be up yet; logs are best effort
                log.debug("log follow of %s: %s", self.name, error)
            self.stopped.wait(self.poll)


def run_job(
    client: KubernetesJobClient,
    manifest: dict[str, Any],
    timeout_seconds: float,
    on_created: Callable[[JobHandle], None] = lambda handle: None,
    poll_seconds: float = 5.0,
    echo: Callable[[str], None] = print,
) -> JobHandle:
    """Create (or re-attach to) the job, wait for Succeeded, delete it. See the module docstring."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    kind = client.kind

    def terminated(signum, _frame):
        raise StepTerminated(f"step received signal {signum}; {kind.kind} {namespace}/{name} is being deleted")

    previous = (
        signal.signal(signal.SIGTERM, terminated) if threading.current_thread() is threading.main_thread() else None
    )
    follower = None
    attempted = False
    try:
        attempted = True  # from here on the job may exist, even if create() raises (e.g. a lost reply)
        job, created = client.create(manifest)
        handle = JobHandle(kind.kind, name, namespace, job.get("metadata", {}).get("uid", ""), attached=not created)
        on_created(handle)
        echo(f"{'created' if created else 're-attached to existing'} {kind.kind} {namespace}/{name}")
        follower = _LogFollower(client, name, namespace, poll_seconds, echo)
        follower.start()

        deadline = time.monotonic() + timeout_seconds
        last_phase = None
        while True:
            phase, reason, message = kind.phase(job)
            if phase != last_phase:
                echo(f"{kind.kind} {name}: {phase}" + (f" ({reason}: {message})" if reason or message else ""))
                last_phase = phase
            if phase == kind.succeeded:
                follower.join(timeout=poll_seconds * 2)  # let the last log lines arrive
                return handle
            if phase == kind.failed:
                follower.join(timeout=poll_seconds * 2)
                raise JobFailed(
                    f"{kind.kind} {namespace}/{name} failed: {reason or 'no reason given'}: {message or 'no message'}"
                    + _tail(follower)
                )
            if time.monotonic() >= deadline:
                raise JobTimedOut(
                    f"{kind.kind} {namespace}/{name} did not succeed within timeout_seconds={timeout_seconds:g} "
                    f"(last phase {phase}); it is being deleted" + _tail(follower)
                )
            time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
            job = client.get(name, namespace)
    finally:
        if follower is not None:
            follower.stopped.set()
        if attempted:
            try:
                if client.delete(name, namespace):
                    echo(f"deleted {kind.kind} {namespace}/{name}")
            except Exception as error:  # never hide the step's own error behind a cleanup error
                echo(f"WARNING: could not delete {kind.kind} {namespace}/{name}: {error}")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _tail(follower: _LogFollower | None) -> str:
    if follower is None or not follower.tail:
        return ""
    return "\nlast lines of the master's log:\n" + "\n".join(follower.tail)
