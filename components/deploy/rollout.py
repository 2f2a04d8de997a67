"""When a rollout is done, as Kubernetes judges it, and why it is not: the pods' own reasons.

``deployment_status`` is ``kubectl rollout status``'s rule for a Deployment (kubernetes/kubectl
``pkg/polymorphichelpers/rollout_status.go``, ``DeploymentStatusViewer.Status``): once ``observedGeneration``
has caught up with ``generation``, a ``Progressing`` condition with reason ``ProgressDeadlineExceeded`` is a
failure; the rollout is done when the updated replicas reach ``spec.replicas``, no old replicas are pending
termination and every updated replica is available. This library also waits for every updated replica to be
ready (available implies it), and for the HorizontalPodAutoscaler to have brought ``spec.replicas`` up to the
request's minimum: a new Deployment starts at one replica.

``pod_report`` says why the pods of a revision are not ready, in their own words (``pods.pod_reasons``), with the
image for ``ErrImagePull``/``ImagePullBackOff``, the last log lines of a container in ``CrashLoopBackOff``
(its last terminated run's), and the Warning events of a ReplicaSet that could not create pods at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.common.kube.api import StepTerminated
from components.common.kube.pods import pod_reasons
from components.deploy.kube_client import DeployApi

TIMED_OUT_REASON = "ProgressDeadlineExceeded"  # deploymentutil.TimedOutReason
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
LOG_LINES_QUOTED = 10


@dataclass(frozen=True)
class Progress:
    done: bool
    message: str
    failed: bool = False


def deployment_status(deployment: dict[str, Any], min_replicas: int = 0) -> Progress:
    """kubectl's verdict on a Deployment (see the module docstring)."""
    metadata, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status") or {}
    name = metadata["name"]
    if metadata.get("generation", 0) > status.get("observedGeneration", 0):
        return Progress(False, "Waiting for deployment spec update to be observed...")
    progressing = _condition(status, "Progressing")
    if progressing and progressing.get("reason") == TIMED_OUT_REASON:
        return Progress(False, f'deployment "{name}" exceeded its progress deadline: {progressing.get("message", "")}',
                        failed=True)  # fmt: skip
    replicas = spec.get("replicas")
    updated = status.get("updatedReplicas", 0)
    if replicas is not None and updated < replicas:
        return Progress(False, f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} new '
                               "replicas have been updated...")  # fmt: skip
    if status.get("replicas", 0) > updated:
        old = status.get("replicas", 0) - updated
        return Progress(False, f'Waiting for deployment "{name}" rollout to finish: {old} old replicas are pending '
                               "termination...")  # fmt: skip
    available, ready = status.get("availableReplicas", 0), status.get("readyReplicas", 0)
    if available < updated:
        return Progress(False, f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated '
                               "replicas are available...")  # fmt: skip
    if ready < updated:
        return Progress(False, f'Waiting for deployment "{name}": {ready} of {updated} updated replicas are ready...')
    if replicas is not None and replicas < min_replicas:
        return Progress(False, f'Waiting for the HorizontalPodAutoscaler to scale deployment "{name}" from {replicas} '
                               f"to min_replicas={min_replicas}...")  # fmt: skip
    return Progress(True, f'deployment "{name}" successfully rolled out')


def _condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def pod_report(api: DeployApi, namespace: str, selector: str, owner_prefix: str) -> str:
    """Why the pods selected are not ready, one line each; or the Warning events about the objects named
    ``owner_prefix`` (the Deployment, its ReplicaSets and pods) when there are no pods. "" when nothing is known."""
    try:
        pods = api.pods(namespace, selector)
        lines = []
        for pod in sorted(pods, key=lambda pod: pod.metadata.name):
            if _ready(pod):
                continue
            reasons = [_with_image(reason, pod) for reason in pod_reasons(pod)] or [f"{pod.status.phase}, not ready"]
            lines.append(f"  pod {pod.metadata.name}: {'; '.join(reasons)}")
            lines += _crash_logs(api, namespace, pod)
        if not pods:
            lines += [
                f"  {event.involved_object.kind} {event.involved_object.name}: {event.reason}: {event.message}"
                for event in api.warnings(namespace)
                if (event.involved_object.name or "").startswith(owner_prefix)
            ]
            if not lines:
                return "no pods were created, and no Warning event says why"
    except StepTerminated:
        raise
    except Exception as error:  # the report is a courtesy; the failure is the error
        return f"(the pods could not be inspected: {error})"
    return "\n".join(lines)


def _ready(pod) -> bool:
    conditions = pod.status.conditions or []
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conditions)


def _with_image(reason: str, pod) -> str:
    """A pull failure names the image (the kubelet's message may not)."""
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason in PULL_FAILURES and f"container {status.name} {waiting.reason}" in reason:
            if status.image not in reason:
                return f"{reason} (image {status.image})"
    return reason


def _crash_logs(api: DeployApi, namespace: str, pod) -> list[str]:
    """The last lines of each crash-looping container's last run."""
    lines = []
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason == "CrashLoopBackOff":
            tail = api.log_tail(namespace, pod.metadata.name, status.name, previous=True)
            if tail:
                lines.append(f"    last lines of container {status.name}'s log:")
                lines += [f"      {line}" for line in tail[-LOG_LINES_QUOTED:]]
    return lines
