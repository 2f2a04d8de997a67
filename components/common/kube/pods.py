"""Why a job's pods have not started, in the pods' own words: scheduler and kubelet reasons."""

from __future__ import annotations

from components.common.kube.api import StepTerminated
from components.common.kube.events import events_section
from components.common.kube.jobs import KubernetesJobClient


def not_started_report(client: KubernetesJobClient, name: str, namespace: str, limit: float) -> str:
    """The message of a job whose pods did not start within ``limit`` seconds: each pod's reasons, or that there
    are no pods, the Warning Events about the job and its pods, and what to do."""
    kind = client.kind
    what = f"{kind.kind} {namespace}/{name}"
    head = f"{what} did not start within scheduling_timeout_seconds={limit:g}; it is being deleted. "
    try:
        pods = client.pods(name, namespace)
    except StepTerminated:
        raise
    except Exception as error:  # the report is a courtesy; the timeout is the error
        return head + f"Its pods could not be listed: {error}" + events_section(client, name, namespace)
    if not pods:
        return (
            head
            + (
                f"No pods were created: is {kind.controller} running, and may it create pods in this namespace? "
                f"See `kubectl describe {kind.resource} -n {namespace} {name}`."
            )
            + events_section(client, name, namespace)
        )
    lines = [
        f"  {pod.metadata.name} ({pod.status.phase}): {'; '.join(pod_reasons(pod)) or 'no reason reported'}"
        for pod in sorted(pods, key=lambda pod: pod.metadata.name)
    ]
    return (
        head
        + "Its pods:\n"
        + "\n".join(lines)
        + events_section(client, name, namespace, [pod.metadata.name for pod in pods])
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
