"""Run a training job of any ``JobKind`` as a pipeline step that never lies and never leaks pods.

``run_job`` creates the job, hands its handle to the caller at once, follows the master's log into the step's
log, reports phase changes, and returns only when the job succeeded. Failure, the step's timeout, the
scheduling timeout, the queue timeout and SIGTERM (the pipeline being terminated) raise, with the Warning Events
about the job and its pods. The job is deleted when the step ends, whatever the reason.

A suspended job (``JobKind.suspended``) is waiting, not failing: in a Kueue queue when it carries Kueue's queue
label, which is named. ``queue_timeout_seconds`` bounds how long it may wait so, the scheduling clock stops
meanwhile, and a resumed job is followed like a new one.

A retried step finds the job of an earlier attempt under the same name: it re-attaches to one that is still
running (or succeeded); one that is being deleted (``deletionTimestamp`` set) or failed is waited out or
deleted, and a new one created in its place.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components.common.kube.events import events_section, pod_names
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.kinds import JobKind
from components.common.kube.logs import LogFollower
from components.common.kube.pods import not_started_report
from components.common.kube.signals import SignalGuard

OLD_JOB_DELETION_TIMEOUT_SECONDS = 600  # how long a job from an earlier attempt may take to be deleted


class JobFailed(RuntimeError):
    pass


class JobTimedOut(RuntimeError):
    pass


class JobNotStarted(JobTimedOut):
    """The job's pods did not start within the scheduling timeout."""


class JobQueued(JobTimedOut):
    """The job stayed suspended (waiting in a queue) past the queue timeout."""


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


def run_job(
    client: KubernetesJobClient,
    manifest: dict[str, Any],
    timeout_seconds: float,
    on_created: Callable[[JobHandle], None] = lambda handle: None,
    poll_seconds: float = 5.0,
    echo: Callable[[str], None] = print,
    scheduling_timeout_seconds: float = 600.0,
    queue_timeout_seconds: float | None = None,
) -> JobHandle:
    """Create (or re-attach to) the job, wait for success, delete it. See the module docstring.

    ``timeout_seconds`` bounds the whole step; ``scheduling_timeout_seconds`` how long the job may wait for its
    pods to start (the clock stops while the job is suspended), after which the pods' own reasons are reported;
    ``queue_timeout_seconds`` (None: only ``timeout_seconds``) how long it may stay suspended at a stretch.
    """
    for parameter, value in (
        ("timeout_seconds", timeout_seconds),
        ("scheduling_timeout_seconds", scheduling_timeout_seconds),
        *([("queue_timeout_seconds", queue_timeout_seconds)] if queue_timeout_seconds is not None else []),
    ):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{parameter} must be > 0 seconds, got {value!r}")
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    kind = client.kind
    deadline = time.monotonic() + timeout_seconds
    follower = None
    job_may_exist = False
    with SignalGuard(f"{kind.kind} {namespace}/{name}") as guard:
        try:
            job_may_exist = True  # from here on the job may exist, even if create() raises (e.g. a lost reply)
            job, created = _create_or_replace(client, manifest, guard, echo, deadline, poll_seconds)
            handle = JobHandle(kind.kind, name, namespace, job.get("metadata", {}).get("uid", ""), attached=not created)
            on_created(handle)
            echo(f"{'created' if created else 're-attached to existing'} {kind.kind} {namespace}/{name}")
            follower = LogFollower(client, name, namespace, poll_seconds, echo)
            follower.start()
            limits = Limits(deadline, timeout_seconds, scheduling_timeout_seconds, queue_timeout_seconds)
            _wait_for_success(client, job, follower, echo, limits)
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
    guard: SignalGuard,
    echo: Callable[[str], None],
    deadline: float,
    poll_seconds: float,
) -> tuple[dict[str, Any], bool]:
    """(job, created): POST the job; when one of its name exists, attach to it, or replace one that an earlier
    attempt left being deleted or failed."""
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


class SchedulingClock:
    """How long the job has waited for its pods to start: until it first reports a started phase (Running or
    Restarting for the Training Operator), or finishes. A suspended job (held by Kueue, or by hand) has no pods
    to schedule: the clock stops while it is suspended, and starts afresh when it is resumed."""

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


class QueueClock:
    """How long the job has been suspended at a stretch: waiting in a queue (Kueue's), or held by hand."""

    def __init__(self, kind: JobKind, limit: float | None):
        self.kind, self.limit = kind, limit
        self.suspended_since: float | None = None

    def expired(self, phase: str) -> bool:
        if phase != self.kind.suspended:
            self.suspended_since = None
            return False
        if self.suspended_since is None:
            self.suspended_since = time.monotonic()
        return self.limit is not None and time.monotonic() - self.suspended_since >= self.limit


@dataclass(frozen=True)
class Limits:
    deadline: float  # time.monotonic() at which the step's timeout_seconds run out
    timeout_seconds: float
    scheduling_timeout_seconds: float
    queue_timeout_seconds: float | None


def suspension(kind: JobKind, job: dict[str, Any]) -> str:
    """What a suspended job waits for, for the step's log."""
    queue = kind.queue(job)
    namespace = job["metadata"]["namespace"]
    if queue:
        return (
            f"; waiting in Kueue's queue {queue!r}: it has not failed and is not stuck, it starts when Kueue admits "
            f"it (why it waits: `kubectl get workloads -n {namespace}` and `kubectl describe` the one for this job)"
        )
    return "; suspended (spec.suspend is true) and in no Kueue queue: it starts when someone resumes it"


def _wait_for_success(
    client: KubernetesJobClient,
    job: dict[str, Any],
    follower: LogFollower,
    echo: Callable[[str], None],
    limits: Limits,
) -> None:
    kind = client.kind
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    what = f"{kind.kind} {namespace}/{name}"
    poll_seconds = follower.poll
    scheduling = SchedulingClock(kind, limits.scheduling_timeout_seconds)
    queued = QueueClock(kind, limits.queue_timeout_seconds)
    last_phase = None
    while True:
        phase, reason, message = kind.phase(job)
        if phase != last_phase:
            echo(
                f"{kind.kind} {name}: {phase}"
                + (f" ({reason}: {message})" if reason or message else "")
                + (suspension(kind, job) if phase == kind.suspended else "")
            )
            last_phase = phase
        if phase == kind.succeeded:
            follower.finish(timeout=poll_seconds * 2)  # let the last log lines arrive
            return
        if phase == kind.failed:
            follower.finish(timeout=poll_seconds * 2)
            hint = kind.explain_failure(job, reason, message)
            raise JobFailed(
                f"{what} failed: {reason or 'no reason given'}: {message or 'no message'}"
                + (f". {hint}" if hint else "")
                + _tail(follower)
                + events_section(client, name, namespace, pod_names(client, name, namespace))
            )
        if queued.expired(phase):
            queue = kind.queue(job)
            raise JobQueued(
                f"{what} was still suspended after queue_timeout_seconds={limits.queue_timeout_seconds:g}"
                + (f", waiting in Kueue's queue {queue!r} to be admitted" if queue else " (in no Kueue queue)")
                + "; it is being deleted. Raise queue_timeout_seconds, or give the queue more quota"
                + events_section(client, name, namespace)
            )
        if scheduling.expired(phase):
            raise JobNotStarted(not_started_report(client, name, namespace, limits.scheduling_timeout_seconds))
        if time.monotonic() >= limits.deadline:
            raise JobTimedOut(
                f"{what} did not succeed within timeout_seconds={limits.timeout_seconds:g} "
                f"(last phase {phase}); it is being deleted"
                + _tail(follower)
                + events_section(client, name, namespace, pod_names(client, name, namespace))
            )
        time.sleep(min(poll_seconds, max(0.0, limits.deadline - time.monotonic())))
        job = client.get(name, namespace)
        if job is None:
            raise JobFailed(
                f"{kind.kind} {namespace}/{name} disappeared while the step waited for it: someone (or something) "
                "else deleted it" + _tail(follower)
            )


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


def _tail(follower: LogFollower | None) -> str:
    if follower is None or not follower.tail:
        return ""
    return "\nlast lines of the master's log:\n" + "\n".join(follower.tail)
