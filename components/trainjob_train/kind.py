"""TrainJob (``trainer.kubeflow.org/v1alpha1``, Kubeflow Trainer v2's) as a ``JobKind`` for the launcher core.

A TrainJob runs as a JobSet of the same name (kubernetes-sigs/jobset): the runtime's replicated job ``node`` is one
indexed Job, ``<trainjob>-node-0``, whose pods carry JobSet's labels (``jobset.sigs.k8s.io/jobset-name``,
``replicatedjob-name``, ``job-index``) and the Job's completion index (``batch.kubernetes.io/job-completion-index``,
which is also the node's rank); the training container is ``node``.

Its conditions are few (Trainer's ``trainjob_types.go``): ``Suspended`` (True while suspended; False with reason
``Resumed`` after), ``Complete`` and ``Failed`` (copied from the JobSet's ``Completed`` and ``Failed``, or
``TrainingRuntimeNotSupported``, or ``DeadlineExceeded`` from v2.2 on). Nothing says the pods run: ``status.jobsStatus``
does, counting the ``node`` Job as ready once all its pods are ready (JobSet's replicatedJobsStatus). ``phase`` reads
both, so a job resumed from a queue is reported running once its pods run, not as created (kubeflow/sdk#803, whose
STATE column kubeflow/trainer#3666 shows as Suspended).
"""

from __future__ import annotations

from typing import Any

from components.common.kube.kinds import JobKind
from components.trainjob_train.manifest import GROUP, KIND, NODE, RESERVED_ENV, VERSION

RUNTIME_NOT_SUPPORTED = "TrainingRuntimeNotSupported"
DEADLINE_EXCEEDED = "DeadlineExceeded"


class TrainJobKind(JobKind):
    def phase(self, job: dict[str, Any]) -> tuple[str, str, str]:
        """Failed or Complete when a terminal condition is true; Suspended while suspended; Running once the node
        pods all run (or finished); Resumed after a resume until then; Pending before."""
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        for wanted in (self.failed, self.succeeded, self.suspended):
            condition = conditions.get(wanted)
            if condition and condition.get("status") == "True":
                return wanted, condition.get("reason", ""), condition.get("message", "")
        for replicated in status.get("jobsStatus") or []:
            if replicated.get("name") == NODE and (replicated.get("ready") or replicated.get("succeeded")):
                return "Running", "", ""
        resumed = conditions.get(self.suspended)
        if resumed and resumed.get("status") == "False":
            return "Resumed", resumed.get("reason", ""), resumed.get("message", "")
        return "Pending", "", ""

    def explain_refusal(self, manifest: dict[str, Any], message: str) -> str:
        if "must be created before the TrainJob is created" in message or "unsupported runtime" in message:
            return runtime_hint(manifest)
        if "reserved envs" in message:
            return f"Trainer's torch plugin sets {', '.join(RESERVED_ENV)} itself: leave them out of env."
        return ""

    def explain_failure(self, job: dict[str, Any], reason: str, message: str) -> str:
        if reason == RUNTIME_NOT_SUPPORTED:
            return runtime_hint(job)
        if reason == DEADLINE_EXCEEDED:
            return (
                "Its activeDeadlineSeconds ran out: the backstop the step sets (timeout_seconds plus 10 minutes) "
                "unless active_deadline_seconds was given"
            )
        return ""

    def event_sources(self, name: str) -> list[str]:
        """The TrainJob and its JobSet (both named ``name``) and the node Job."""
        return [name, f"{name}-{NODE}-0"]


def runtime_hint(job: dict[str, Any]) -> str:
    """Why a runtime reference fails, naming the runtime, and what to do."""
    ref = (job.get("spec") or {}).get("runtimeRef") or {}
    kind, name = ref.get("kind") or "ClusterTrainingRuntime", ref.get("name", "?")
    namespace = job.get("metadata", {}).get("namespace", "")
    listing = "kubectl get clustertrainingruntimes"
    if kind == "TrainingRuntime":
        listing = f"kubectl get trainingruntimes -n {namespace}"
    return (
        f"The training runtime {kind} {name!r} is missing or unsupported in this cluster: see `{listing}`, install it "
        "(Kubeflow Trainer's manifests install torch-distributed), or set runtime to one that is installed"
    )


TRAINJOB = TrainJobKind(
    group=GROUP,
    version=VERSION,
    plural="trainjobs",
    kind=KIND,
    succeeded="Complete",
    failed="Failed",
    master_selector=(
        "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
        "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0"
    ),
    pods_selector="jobset.sigs.k8s.io/jobset-name={name}",
    log_container=NODE,
    controller="Kubeflow Trainer (its TrainJob controller, and JobSet's)",
    started=("Running",),
    suspended="Suspended",
    install_hint=(
        "Kubeflow installs before Trainer v2 serve PyTorchJob instead: use launcher=pytorchjob (a PyTorchJob of the "
        "Training Operator v1) or launcher=auto (whichever kind the cluster serves), or install Kubeflow Trainer v2 "
        "(its manifests, which bring JobSet and the torch-distributed runtime)"
    ),
)
