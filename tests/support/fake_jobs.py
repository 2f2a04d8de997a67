"""A fake job controller driven by a script of states over time: the base of each fake training operator.

A test sets the scenario on the controller before the launcher creates its job: ``script`` (the states the
job goes through, seconds after creation), ``log_lines`` (what the leader pod's main container writes) and
``pending_pods`` (a role's pod status until the job runs: Unschedulable, ImagePullBackOff, ...). Each job
created follows the script as it was at its creation. A subclass says which states mean what (``initial``,
``started``, ``finished``, ``suspended``), how the job's conditions read (``status``), which pods it has and
which of them writes the log (``pods``, ``leader``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.support.fake_kube import Controller, StoredObject, container_status, rfc3339


@dataclass
class Step:
    after: float  # seconds after creation
    condition: str  # a state of the job, as its controller's conditions name it (Created, Running, Succeeded, ...)
    reason: str = ""
    message: str = ""


class ScriptedJobController(Controller):
    initial = "Created"  # the state before the first step: pods created, pending
    started: tuple[str, ...] = ()  # states in which the job's pods run
    finished: tuple[str, ...] = ()  # terminal states, success first; the first reached wins
    suspended = "Suspended"  # the state in which the job has no pods

    def __init__(self, script: list[Step] | None = None, log_lines: list | None = None):
        super().__init__()
        self.script: list[Step] = (
            list(script)
            if script is not None
            else [Step(0, self.initial), Step(0.2, self.started[0]), Step(0.6, self.finished[0])]
        )
        # The leader's log: a str is written when the job starts, (seconds after creation, str) at that time.
        self.log_lines: list = (
            list(log_lines) if log_lines is not None else ["rank 0 starting", "epoch 1/1 done", "training finished"]
        )
        self.pending_pods: dict[str, dict] = {}  # role (replica type) -> pod status until the job runs

    # --- what a subclass says --------------------------------------------------------------------------------

    def leader(self, obj: StoredObject) -> tuple[str, str]:
        """(pod name, container) whose log is ``log_lines``."""
        raise NotImplementedError

    # --- the script --------------------------------------------------------------------------------------------

    def on_create(self, obj: StoredObject) -> None:
        obj.state["script"] = list(self.script)

    def reached(self, obj: StoredObject, now: float) -> list[Step]:
        steps = sorted(obj.state["script"], key=lambda step: step.after)
        return [step for step in steps if now - obj.created_at >= step.after]

    def phase(self, obj: StoredObject, now: float) -> str:
        """The latest state reached; a terminal one, once reached, stays."""
        reached = [step.condition for step in self.reached(obj, now)]
        for terminal in self.finished:
            if terminal in reached:
                return terminal
        return reached[-1] if reached else self.initial

    def finished_at(self, obj: StoredObject) -> float | None:
        return min((s.after for s in obj.state["script"] if s.condition in self.finished), default=None)

    def started_at(self, obj: StoredObject) -> float | None:
        return min((s.after for s in obj.state["script"] if s.condition in self.started), default=None)

    # --- pods and the leader's log -----------------------------------------------------------------------------

    def pod_status(self, phase: str, role: str, containers: list[str], image: str) -> dict:
        """A pod's status in the job's ``phase``: pending (or ``pending_pods[role]``) until it runs, running, or
        terminated with the job's outcome."""
        if phase not in (*self.started, *self.finished):
            waiting = {"waiting": {"reason": "ContainerCreating"}}
            default = {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [container_status(c, image, waiting) for c in containers],
            }
            return self.pending_pods.get(role, default)
        if phase in self.started:
            pod_phase, state = "Running", {"running": {"startedAt": rfc3339(time.time())}}
        else:
            succeeded = phase == self.finished[0]
            pod_phase = "Succeeded" if succeeded else "Failed"
            state = {"terminated": {"exitCode": 0 if succeeded else 1, "reason": "Completed"}}
        return {
            "phase": pod_phase,
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [container_status(c, image, state, pod_phase == "Running") for c in containers],
        }

    def log(self, obj: StoredObject, pod_name: str, container: str) -> list[tuple[float, str]]:
        """``log_lines`` from the leader's main container, none written before the job started."""
        if (pod_name, container) != self.leader(obj):
            return []
        started = self.started_at(obj) or 0.0
        lines = []
        for entry in self.log_lines:
            after, text = (started, entry) if isinstance(entry, str) else entry
            lines.append((max(after, started), text))
        return sorted(lines, key=lambda line: line[0])
