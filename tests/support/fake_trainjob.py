"""Kubeflow Trainer v2 and JobSet as a controller of the fake API server (``FakeKube([KubeflowTrainer()])``).

Modelled from their source (kubeflow/trainer v2.1.0 and v2.3.0; kubernetes-sigs/jobset v0.10.1 and v0.12.0, the
releases those Trainer releases build on):

- Admission, in the API server's order: the CRD of the chosen release (``release``), strictly, with its CEL rules
  (422), then Trainer's validating webhook (``pkg/webhooks/trainjob_webhook.go``: the runtime's kind must be
  registered, the runtime must exist, the torch and JobSet plugins' rules), answered 403 as controller-runtime
  answers a refusal (``trainer_rules``). ``webhook=False`` models a cluster whose webhook configuration is gone, so
  the controller meets what the webhook would have refused. An update (merge PATCH) goes through the same, with the
  CEL transition rules (immutable fields) and the webhook's update rules.
- The TrainJob controller (``pkg/controller/trainjob_controller.go``): an unregistered runtime kind sets
  ``Failed`` with reason ``TrainingRuntimeNotSupported`` (``unsupported runtime: <Kind>.<group>``); a runtime that
  does not exist makes no JobSet and records a Warning Event ``TrainJobResourcesCreationFailed`` on the TrainJob,
  again at each retry; ``Suspended`` is True while ``spec.suspend`` is, and False with reason ``Resumed`` after;
  ``Complete`` and ``Failed`` are the JobSet's ``Completed`` and ``Failed`` conditions, renamed, with JobSet's
  reasons and messages; ``jobsStatus`` is the JobSet's replicatedJobsStatus; from v2.2 on an
  ``activeDeadlineSeconds`` past its start (creation, or the last resume) sets ``Failed`` with reason
  ``DeadlineExceeded`` and deletes the JobSet.
- The torch plugin (``pkg/runtime/framework/plugins/torch/torch.go``): the node container gets the trainer's env,
  then ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (from the Job's completion index annotation),
  ``PET_MASTER_ADDR`` = ``<trainjob>-node-0-0.<trainjob>`` and ``PET_MASTER_PORT`` = 29500 (Trainer's
  ``ContainerTrainerPort``).
- JobSet (``pkg/controllers/jobset_controller.go``): the JobSet is named as the TrainJob; the replicated job
  ``node`` becomes the indexed Job ``<trainjob>-node-0``, whose pods ``<trainjob>-node-0-<index>-<5 characters>``
  carry JobSet's labels and annotations (``jobset.sigs.k8s.io/jobset-name``, ``replicatedjob-name``,
  ``job-index``, ...) and the Job controller's (``batch.kubernetes.io/job-name``,
  ``batch.kubernetes.io/job-completion-index``). A suspended JobSet suspends its Job, which deletes its pods.
  A failed Job fails the JobSet (reason ``FailedJobs``, ``jobset failed due to one or more job failures (first failed
  job: <job>)``), with Warning Events on the Job (``BackoffLimitExceeded``) and the JobSet.

A scenario is scripted in time as for the other fake jobs (``tests/support/fake_jobs.py``), in the states
``Pending`` (pods created, not running), ``Running``, ``Complete``, ``Failed`` and, for Kueue holding the job,
``Suspended`` and ``Resumed`` (Kueue's webhook suspends a queued job at creation and resumes it on admission: the
object shows ``spec.suspend`` accordingly).
"""

from __future__ import annotations

import copy
import hashlib
import time

from tests.support.fake_jobs import ScriptedJobController, Step
from tests.support.fake_kube import Refusal, Resource, StoredObject, rfc3339, status_body
from tests.support.trainer_rules import (
    CRDS,
    GROUP,
    aggregate,
    cel_errors,
    invalid_message,
    runtime,
    schema_errors,
    webhook_errors,
    webhook_message,
)

NODE = "node"
MASTER_PORT = 29500  # Trainer's constants.ContainerTrainerPort
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
INDEX_FIELD_PATH = f"metadata.annotations['{COMPLETION_INDEX}']"  # Trainer's constants.JobCompletionIndexFieldPath
JOBSET_FAILED_MESSAGE = "jobset failed due to one or more job failures"
MERGE_PATCH = "application/merge-patch+json"


class KubeflowTrainer(ScriptedJobController):
    """TrainJobs (``trainer.kubeflow.org/v1alpha1``) of Trainer ``release`` ("2.3" or "2.1"), run through JobSet."""

    resource = Resource.from_crd(CRDS["2.3"], "v1alpha1")
    patch_types = (MERGE_PATCH,)
    initial = "Pending"
    started = ("Running",)
    finished = ("Complete", "Failed")

    def __init__(
        self,
        release: str = "2.3",
        script: list[Step] | None = None,
        log_lines: list | None = None,
        webhook: bool = True,
    ):
        super().__init__(script, log_lines)
        self.release = release
        self.webhook = webhook
        # The runtimes that exist: (kind, name); a TrainingRuntime's name is "<namespace>/<name>".
        self.runtimes: dict[tuple[str, str], dict] = {("ClusterTrainingRuntime", "torch-distributed"): runtime(release)}
        self.runtime_kinds = {"ClusterTrainingRuntime", "TrainingRuntime"}  # the kinds Trainer's registry serves

    # --- admission -------------------------------------------------------------------------------------------------

    def admit(self, body: dict) -> list[str] | Refusal:
        return self._admission(body, None) or []

    def _admission(self, body: dict, old: dict | None) -> Refusal | None:
        name = body["metadata"].get("name", "")
        errors = schema_errors(body, self.release) + cel_errors(body, self.release, old)
        if errors:
            return Refusal(422, invalid_message(name, errors))
        if not self.webhook:
            return None
        if old is None:  # Trainer's defaulting webhook dates each runtime patch
            for patch in (body.get("spec") or {}).get("runtimePatches") or []:
                patch.setdefault("time", rfc3339(time.time()))
        refused = webhook_errors(
            body, self.release, self.runtimes, self.runtime_kinds, body["metadata"]["namespace"], old
        )
        return Refusal(403, webhook_message(refused)) if refused else None

    def on_create(self, obj: StoredObject) -> None:
        super().on_create(obj)
        obj.state["resumed_at"] = 0.0

    def patch(self, obj: StoredObject | None, body, media_type: str, query: dict, now: float):
        if obj is None:
            return 404, status_body(404, f"{self.resource.qualified} not found")
        updated = _merge(copy.deepcopy(obj.body), body)
        updated["metadata"] = obj.body["metadata"]  # name, namespace, uid and labels stay as created here
        refusal = self._admission(updated, obj.body)
        if refusal:
            return refusal.code, status_body(refusal.code, refusal.message)
        obj.body = updated
        return 200, self.view(obj, now)

    # --- what the controllers make of it ---------------------------------------------------------------------------

    def _runtime(self, obj: StoredObject) -> tuple[str, dict | None]:
        """("unsupported" | "missing" | "ok", the runtime)."""
        ref = obj.body["spec"]["runtimeRef"]
        kind = ref.get("kind") or "ClusterTrainingRuntime"
        if (ref.get("apiGroup") or GROUP) != GROUP or kind not in self.runtime_kinds:
            return "unsupported", None
        key = (kind, ref["name"] if kind == "ClusterTrainingRuntime" else f"{obj.namespace}/{ref['name']}")
        found = self.runtimes.get(key)
        return ("ok", found) if found is not None else ("missing", None)

    def _suspended(self, obj: StoredObject, now: float) -> bool | None:
        """True while Kueue holds the job, False once resumed, None when it never was suspended."""
        states = [step.condition for step in self.reached(obj, now) if step.condition in ("Suspended", "Resumed")]
        if obj.body["spec"].get("suspend") is not None and not states:
            return bool(obj.body["spec"]["suspend"])
        return None if not states else states[-1] == "Suspended"

    def _deadline_exceeded_at(self, obj: StoredObject) -> float | None:
        """Seconds after creation at which v2.2+'s activeDeadlineSeconds fails the job, counted from the last
        resume; None without one."""
        seconds = obj.body["spec"].get("activeDeadlineSeconds")
        if self.release == "2.1" or not seconds:
            return None
        resumes = [s.after for s in obj.state["script"] if s.condition == "Resumed"]
        return (max(resumes) if resumes else 0.0) + seconds

    def phase(self, obj: StoredObject, now: float) -> str:
        state = super().phase(obj, now)
        deadline = self._deadline_exceeded_at(obj)
        if deadline is not None and now - obj.created_at >= deadline and state not in self.finished:
            return "DeadlineExceeded"
        if self._suspended(obj, now):
            return "Suspended"
        return "Pending" if state in ("Suspended", "Resumed") else state

    def status(self, obj: StoredObject, now: float) -> dict:
        availability, _ = self._runtime(obj)
        conditions: list[dict] = []
        if availability == "unsupported":
            ref = obj.body["spec"]["runtimeRef"]
            message = (
                f"unsupported runtime: {ref.get('kind') or 'ClusterTrainingRuntime'}.{ref.get('apiGroup') or GROUP}"
            )
            _set_condition(conditions, "Failed", "True", "TrainingRuntimeNotSupported", message, obj.stamp(0))
            return {"conditions": conditions}
        for step in self.reached(obj, now):
            stamp = obj.stamp(step.after)
            if step.condition == "Suspended":
                _set_condition(conditions, "Suspended", "True", "Suspended", "TrainJob is suspended", stamp)
            elif step.condition == "Resumed":
                _set_condition(conditions, "Suspended", "False", "Resumed", "TrainJob is resumed", stamp)
        if obj.body["spec"].get("suspend") and not any(c["type"] == "Suspended" for c in conditions):
            _set_condition(conditions, "Suspended", "True", "Suspended", "TrainJob is suspended", obj.stamp(0))
        if availability == "missing":
            return {"conditions": conditions} if conditions else {}
        phase = self.phase(obj, now)
        finished = [s for s in self.reached(obj, now) if s.condition in self.finished]
        if phase == "DeadlineExceeded":
            deadline = self._deadline_exceeded_at(obj)
            _set_condition(
                conditions, "Failed", "True", "DeadlineExceeded", "TrainJob exceeded its active deadline",
                obj.stamp(deadline),
            )  # fmt: skip
        elif finished:
            step = finished[0]
            if step.condition == "Complete":
                reason, message = step.reason or "AllJobsCompleted", step.message or "jobset completed successfully"
            else:
                reason = step.reason or "FailedJobs"
                message = step.message or f"{JOBSET_FAILED_MESSAGE} (first failed job: {obj.name}-{NODE}-0)"
            _set_condition(conditions, step.condition, "True", reason, message, obj.stamp(step.after))
        node = {"name": NODE, "ready": 0, "succeeded": 0, "failed": 0, "active": 0, "suspended": 0}
        if phase == "Suspended":
            node["suspended"] = 1
        elif phase == "Running":
            node |= {"ready": 1, "active": 1}
        elif phase == "Pending":
            node["active"] = 1
        elif phase == "Complete":
            node["succeeded"] = 1
        elif phase == "Failed":
            node["failed"] = 1
        status = {"jobsStatus": [node]}
        return {"conditions": conditions, **status} if conditions else status

    def view(self, obj: StoredObject, now: float) -> dict:
        shown = super().view(obj, now)
        suspended = self._suspended(obj, now)
        if suspended is not None:  # Kueue's webhook suspended it at creation; Kueue resumed it on admission
            shown = {**shown, "spec": {**shown["spec"], "suspend": suspended}}
        return shown

    # --- pods, their log, events -----------------------------------------------------------------------------------

    def replicas(self, obj: StoredObject) -> int:
        return obj.body["spec"].get("trainer", {}).get("numNodes") or 1

    def pod_name(self, obj: StoredObject, index: int) -> str:
        suffix = hashlib.sha256(f"{obj.uid}/{index}".encode()).hexdigest()[:5]  # the Job controller's random part
        return f"{obj.name}-{NODE}-0-{index}-{suffix}"

    def leader(self, obj: StoredObject) -> tuple[str, str]:
        return self.pod_name(obj, 0), NODE

    def pods(self, obj: StoredObject, now: float) -> list[dict]:
        availability, found = self._runtime(obj)
        phase = self.phase(obj, now)
        if availability != "ok" or phase in ("Suspended", "DeadlineExceeded"):
            return []  # no JobSet; a suspended Job deletes its pods; the deadline deletes the JobSet
        template = _node_template(found, obj)
        containers = [c["name"] for c in template["spec"]["containers"]] + list(self.server.sidecars)
        node = next(c for c in template["spec"]["containers"] if c["name"] == NODE)
        pods = []
        for index in range(self.replicas(obj)):
            labels = {**(template.get("metadata") or {}).get("labels", {}), **_jobset_labels(obj, index)}
            status = self.pod_status(phase, NODE, containers, node["image"])
            pod = self.server.pod(obj, self.pod_name(obj, index), labels, containers, node["image"], status)
            pod["metadata"]["annotations"] = {
                **(template.get("metadata") or {}).get("annotations", {}),
                COMPLETION_INDEX: str(index),
                "jobset.sigs.k8s.io/jobset-name": obj.name,
                "jobset.sigs.k8s.io/replicatedjob-name": NODE,
            }
            for container in pod["spec"]["containers"]:
                if container["name"] == NODE:
                    container.update({key: node[key] for key in ("command", "args", "env") if key in node})
            pod["spec"] |= {
                key: template["spec"][key]
                for key in ("nodeSelector", "tolerations", "serviceAccountName", "volumes")
                if key in template["spec"]
            }
            pod["spec"]["subdomain"] = obj.name
            pod["spec"]["hostname"] = f"{obj.name}-{NODE}-0-{index}"
            pods.append(pod)
        return pods

    def events(self, obj: StoredObject, now: float) -> list[dict]:
        availability, _ = self._runtime(obj)
        events = []
        if availability == "missing":
            ref = obj.body["spec"]["runtimeRef"]
            kind = ref.get("kind") or "ClusterTrainingRuntime"
            plural = "clustertrainingruntimes" if kind == "ClusterTrainingRuntime" else "trainingruntimes"
            message = (
                f"TrainJob resources reconciliation failed: not found {kind} specified in TrainJob: "
                f'{plural}.{GROUP} "{ref["name"]}" not found'
            )
            event = self.server.event(obj.reference(), "TrainJobResourcesCreationFailed", message, obj.stamp(0),
                                      "Warning", "trainjob-controller")  # fmt: skip
            event["count"] = 1 + int(now - obj.created_at)  # the controller retries with backoff
            return [event]
        failed = [s for s in self.reached(obj, now) if s.condition == "Failed"]
        if failed and availability == "ok":
            stamp = obj.stamp(failed[0].after)
            job = self._child(obj, "Job", "batch/v1", f"{obj.name}-{NODE}-0")
            events.append(self.server.event(job, "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                                            stamp, "Warning", "job-controller"))  # fmt: skip
            message = f"{JOBSET_FAILED_MESSAGE} (first failed job: {obj.name}-{NODE}-0)"
            jobset = self._child(obj, "JobSet", "jobset.x-k8s.io/v1alpha2", obj.name)
            events.append(self.server.event(jobset, "FailedJobs", message, stamp, "Warning", "jobset"))
        for status in self.pending_pods.values():
            for condition in status.get("conditions", []):
                if condition.get("reason") == "Unschedulable" and availability == "ok":
                    for index in range(self.replicas(obj)):
                        pod = self._child(obj, "Pod", "v1", self.pod_name(obj, index))
                        events.append(self.server.event(pod, "FailedScheduling", condition["message"],
                                                        obj.stamp(0), "Warning", "default-scheduler"))  # fmt: skip
        return events

    def _child(self, obj: StoredObject, kind: str, api_version: str, name: str) -> dict:
        return {"kind": kind, "namespace": obj.namespace, "name": name, "uid": f"{obj.uid}-{name}",
                "apiVersion": api_version}  # fmt: skip


def _set_condition(conditions: list[dict], kind: str, status: str, reason: str, message: str, stamp: str) -> None:
    """apimachinery's meta.SetStatusCondition: a condition of the same type is updated in place; its
    lastTransitionTime changes only with its status."""
    for condition in conditions:
        if condition["type"] == kind:
            if condition["status"] != status:
                condition["lastTransitionTime"] = stamp
            condition.update({"status": status, "reason": reason, "message": message})
            return
    conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": stamp})  # fmt: skip


def _node_template(found: dict, obj: StoredObject) -> dict:
    """The node pod template: the runtime's, with the override field merged in and the trainer's fields and the
    torch plugin's variables set, as Trainer builds the JobSet."""
    (job,) = [j for j in found["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == NODE]
    template = copy.deepcopy(job["template"]["spec"]["template"])
    spec = obj.body["spec"]
    overrides = [o for o in spec.get("podTemplateOverrides") or [] if any(t["name"] == NODE for t in o["targetJobs"])]
    for patch in spec.get("runtimePatches") or []:
        for replicated in (
            ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec", {}).get("replicatedJobs", [])
        ):
            if replicated["name"] == NODE:
                overrides.append(replicated.get("template", {}).get("spec", {}).get("template", {}))
    for override in overrides:
        metadata = template.setdefault("metadata", {})
        for key in ("labels", "annotations"):
            metadata.setdefault(key, {}).update((override.get("metadata") or {}).get(key) or {})
        pod = override.get("spec") or {}
        for key in ("nodeSelector", "serviceAccountName"):
            if key in pod:
                template["spec"][key] = pod[key]
        for key in ("tolerations", "volumes"):
            template["spec"][key] = [*template["spec"].get(key, []), *pod.get(key, [])]
        for container in pod.get("containers") or []:
            for own in template["spec"]["containers"]:
                if own["name"] == container["name"]:
                    own["volumeMounts"] = [*own.get("volumeMounts", []), *container.get("volumeMounts", [])]
    trainer = spec.get("trainer") or {}
    node = next(c for c in template["spec"]["containers"] if c["name"] == NODE)
    for key in ("image", "command", "args"):
        if key in trainer:
            node[key] = trainer[key]
    if "resourcesPerNode" in trainer:
        node["resources"] = trainer["resourcesPerNode"]
    nproc = trainer.get("numProcPerNode", "auto")
    node["env"] = [
        *trainer.get("env", []),
        {"name": "PET_NNODES", "value": str(trainer.get("numNodes") or 1)},
        {"name": "PET_NPROC_PER_NODE", "value": str(nproc)},
        {
            "name": "PET_NODE_RANK",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        },
        {"name": "PET_MASTER_ADDR", "value": f"{obj.name}-{NODE}-0-0.{obj.name}"},
        {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
    ]
    node["ports"] = [{"containerPort": MASTER_PORT}]
    return template


def _jobset_labels(obj: StoredObject, index: int) -> dict[str, str]:
    """The labels JobSet and the Job controller give each node pod."""
    job = f"{obj.name}-{NODE}-0"
    return {
        "jobset.sigs.k8s.io/jobset-name": obj.name,
        "jobset.sigs.k8s.io/jobset-uid": f"{obj.uid}-jobset",
        "jobset.sigs.k8s.io/replicatedjob-name": NODE,
        "jobset.sigs.k8s.io/replicatedjob-replicas": "1",
        "jobset.sigs.k8s.io/restart-attempt": "0",
        "jobset.sigs.k8s.io/global-replicas": "1",
        "jobset.sigs.k8s.io/job-index": "0",
        "jobset.sigs.k8s.io/job-global-index": "0",
        "jobset.sigs.k8s.io/job-key": hashlib.sha1(f"{obj.namespace}/{job}".encode()).hexdigest(),
        "jobset.sigs.k8s.io/group-name": "default",
        "jobset.sigs.k8s.io/group-replicas": "1",
        "jobset.sigs.k8s.io/job-group-index": "0",
        "batch.kubernetes.io/controller-uid": f"{obj.uid}-{job}",
        "batch.kubernetes.io/job-name": job,
        "controller-uid": f"{obj.uid}-{job}",
        "job-name": job,
        COMPLETION_INDEX: str(index),
    }


def _merge(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def pod_environment(pod: dict) -> dict[str, str]:
    """The node container's environment as the kubelet resolves it: a fieldRef to the completion index annotation
    read from the pod."""
    (node,) = [c for c in pod["spec"]["containers"] if c["name"] == NODE]
    resolved = {}
    for variable in node.get("env", []):
        if "value" in variable:
            resolved[variable["name"]] = variable["value"]
        else:
            path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            key = path.split("['", 1)[1].rstrip("']")
            resolved[variable["name"]] = pod["metadata"]["annotations"][key]
    return resolved


__all__ = ["KubeflowTrainer", "Step", "aggregate", "pod_environment"]
