"""The Training Operator's PyTorchJob controller (kubeflow/trainer release-1.9), as a controller of the fake API
server (``FakeKube([TrainingOperator()])``).

- Admission: the operator's validating webhook rules (``operator_rules.webhook_violations``): 422.
- Conditions over the job's script, set as the operator's ``setCondition`` sets them: a changed condition moves
  to the end of the list with new timestamps, Running and Restarting replace each other, a terminal or
  Suspended condition turns Running False, and nothing changes after Failed. A Created or Running step after
  Suspended resumes the job: Suspended turns False (reason ``PyTorchJobResumed``), and Created, already there,
  stays as it was. Reasons are the operator's (``PyTorchJobRunning``, ...) unless the script names one.
- Pods: one per replica, named ``<job>-<replica type>-<index>``, with the operator's labels
  (``training.kubeflow.org/job-name``, ``replica-type``, ``replica-index``, ``job-role: master``); none while
  the job is suspended (the operator deletes them). The Master's ``pytorch`` container writes the log.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_jobs import ScriptedJobController, Step
from tests.support.fake_kube import Resource, StoredObject
from tests.support.operator_rules import webhook_violations

CRD = Path(__file__).resolve().parents[3] / "shared/reference/crds/kubeflow.org_pytorchjobs.yaml"
OPERATOR_REASON = {  # the Training Operator's condition reasons, for steps that name none
    "Created": "PyTorchJobCreated",
    "Running": "PyTorchJobRunning",
    "Restarting": "PyTorchJobRestarting",
    "Suspended": "PyTorchJobSuspended",
    "Succeeded": "PyTorchJobSucceeded",
    "Failed": "PyTorchJobFailed",
}


class TrainingOperator(ScriptedJobController):
    """PyTorchJobs (``kubeflow.org/v1``), served as the CRD defines them, run as the operator runs them."""

    resource = Resource.from_crd(CRD, "v1")
    started = ("Running", "Restarting")
    finished = ("Succeeded", "Failed")

    def admit(self, body: dict) -> list[str]:
        return webhook_violations(body)

    def status(self, obj: StoredObject, now: float) -> dict:
        conditions: list[dict] = []
        for step in self.reached(obj, now):
            conditions = _set_condition(conditions, step, obj.stamp(step.after), obj.name)
        return {"conditions": conditions, "startTime": obj.stamp(0)}

    def leader(self, obj: StoredObject) -> tuple[str, str]:
        master = obj.body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"]
        return f"{obj.name}-master-0", master

    def pods(self, obj: StoredObject, now: float) -> list[dict]:
        phase = self.phase(obj, now)
        if phase == self.suspended:  # the operator deletes a suspended job's pods
            return []
        pods = []
        for replica_type, replica in obj.body["spec"].get("pytorchReplicaSpecs", {}).items():
            template = replica["template"]
            for index in range(replica.get("replicas", 1)):
                role = replica_type.lower()
                labels = {
                    **template.get("metadata", {}).get("labels", {}),
                    "training.kubeflow.org/job-name": obj.name,
                    "training.kubeflow.org/operator-name": "pytorchjob-controller",
                    "training.kubeflow.org/replica-type": role,
                    "training.kubeflow.org/replica-index": str(index),
                }
                if role == "master":
                    labels["training.kubeflow.org/job-role"] = "master"
                containers = [c["name"] for c in template["spec"]["containers"]] + list(self.server.sidecars)
                image = template["spec"]["containers"][0]["image"]
                status = self.pod_status(phase, role, containers, image)
                pods.append(self.server.pod(obj, f"{obj.name}-{role}-{index}", labels, containers, image, status))
        return pods


def _set_condition(conditions: list[dict], step: Step, stamp: str, name: str) -> list[dict]:
    """The Training Operator's setCondition: the changed condition moves to the end; nothing changes after Failed."""
    if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
        return conditions
    if step.condition == "Created" and any(c["type"] == "Created" for c in conditions):
        # Resumed, its pods pending again: the operator turns Suspended False and leaves Created as it is
        # (setCondition skips a condition whose status and reason did not change).
        return [_resumed(c, stamp) if c["type"] == "Suspended" else c for c in conditions]
    kept = []
    for condition in conditions:
        if condition["type"] == step.condition or {condition["type"], step.condition} == {"Running", "Restarting"}:
            continue
        if condition["type"] == "Running" and step.condition in (*TrainingOperator.finished, "Suspended"):
            condition = {**condition, "status": "False"}
        if condition["type"] == "Suspended" and step.condition == "Running":  # resumed
            condition = _resumed(condition, stamp)
        kept.append(condition)
    message = step.message or f"PyTorchJob {name} is {step.condition.lower()}."
    reason = step.reason or OPERATOR_REASON.get(step.condition, step.condition)
    return kept + [
        {
            "type": step.condition,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
        }
    ]


def _resumed(condition: dict, stamp: str) -> dict:
    return {**condition, "status": "False", "reason": "PyTorchJobResumed", "lastTransitionTime": stamp}
