"""What the cluster said about a job in Events: the Warnings about the job, its child objects and its pods.

Many errors reach no condition and no pod status: a controller that cannot build the job's children (a missing
runtime, a Job the API server refuses), a scheduler or kubelet that gives up on a pod. They appear only as
Events, which ``kubectl describe`` shows and which expire after an hour; the launcher puts them into its failure
messages while they are there.
"""

from __future__ import annotations

from components.common.kube.api import StepTerminated
from components.common.kube.jobs import KubernetesJobClient

MOST_EVENTS = 15  # the newest ones; a crash-looping pod repeats itself


def warning_events(client: KubernetesJobClient, name: str, namespace: str, pod_names: list[str] = ()) -> list[str]:
    """One line per distinct Warning Event about job ``name``, the objects its kind names and ``pod_names``:
    ``<Kind> <name>: <reason>: <message>``, oldest first, at most ``MOST_EVENTS``."""
    events = client.events([*client.kind.event_sources(name), *pod_names], namespace)
    lines = []
    for event in events:
        if event.type != "Warning":
            continue
        involved = event.involved_object
        count = f" (x{event.count})" if event.count and event.count > 1 else ""
        lines.append(f"{involved.kind} {involved.name}: {event.reason}: {event.message}{count}")
    return list(dict.fromkeys(lines))[-MOST_EVENTS:]


def events_section(client: KubernetesJobClient, name: str, namespace: str, pod_names: list[str] = ()) -> str:
    """The Warning Events as a paragraph of a failure message; "" when there are none. Never raises for the
    Events' sake: they are a courtesy, the failure is the error."""
    try:
        lines = warning_events(client, name, namespace, pod_names)
    except StepTerminated:
        raise
    except Exception as error:
        return f"\nIts Events could not be listed: {error}"
    return ("\nWarning Events:\n" + "\n".join(f"  {line}" for line in lines)) if lines else ""


def pod_names(client: KubernetesJobClient, name: str, namespace: str) -> list[str]:
    """The job's pods' names, or none when they cannot be listed."""
    try:
        return sorted(pod.metadata.name for pod in client.pods(name, namespace))
    except StepTerminated:
        raise
    except Exception:
        return []
