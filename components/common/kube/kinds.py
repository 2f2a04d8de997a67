"""``JobKind``: what differs between kinds of training job, for the launcher that runs any of them.

A kind names its API path (group, version, plural), the condition types that end the wait, those that
mean its pods got to run, the label selectors of its pods and of the pod whose log is followed, and that
pod's container. ``phase`` reads a job's state from its conditions; a kind whose controller reports
progress differently overrides it in a subclass, as it overrides what the launcher says when the cluster
serves no such kind (``not_served``), when an admission webhook refuses the job (``explain_refusal``), when the
job fails (``explain_failure``), whose Events tell what went wrong (``event_sources``) and which queue holds a
suspended job (``queue``). Each job component defines its own kind beside its manifest
(``components.pytorchjob_train.kind.PYTORCHJOB``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # the label by which Kueue queues a job (its LocalQueue's name)


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
    controller: str  # what creates the job's pods, as people know it ("the Training Operator")
    # What to do when the cluster serves no such kind: install what, or which other launcher to use.
    install_hint: str = ""
    started: tuple[str, ...] = ("Running", "Restarting")  # condition types that mean the pods got to run
    suspended: str = "Suspended"  # condition type of a job held back (by Kueue, or by hand): it has no pods

    @property
    def resource(self) -> str:
        """``plural.group``, as the RBAC authorizer and kubectl name the resource."""
        return f"{self.plural}.{self.group}"

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

    def not_served(self, namespace: str) -> str:
        """The message for a create answered 404 because the cluster serves no such resource."""
        return (
            f"could not create {self.resource} in namespace {namespace}: this cluster serves no {self.kind} "
            f"({self.group}/{self.version}), so {self.controller} is not installed"
            + (f". {self.install_hint}" if self.install_hint else "")
        )

    def explain_refusal(self, manifest: dict[str, Any], message: str) -> str:
        """What to add to an admission webhook's refusal of ``manifest`` (its ``message``); "" for nothing."""
        return ""

    def explain_failure(self, job: dict[str, Any], reason: str, message: str) -> str:
        """What to add to the message of a job that failed with ``reason``; "" for nothing."""
        return ""

    def event_sources(self, name: str) -> list[str]:
        """The names of the objects whose Events tell what happened to job ``name`` (besides its pods')."""
        return [name]

    def queue(self, job: dict[str, Any]) -> str:
        """The queue that holds the job while it is suspended (Kueue's ``kueue.x-k8s.io/queue-name``); "" for
        none."""
        return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")
