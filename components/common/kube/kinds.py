"""``JobKind``: what differs between kinds of training job, for the launcher that runs any of them.

A kind names its API path (group, version, plural), the condition types that end the wait, those that
mean its pods got to run, the label selectors of its pods and of the pod whose log is followed, and that
pod's container. ``phase`` reads a job's state from its conditions; a kind whose controller reports
progress differently overrides it in a subclass. Each job component defines its own kind beside its
manifest (``components.pytorchjob_train.kind.PYTORCHJOB``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
