"""Build and check a Kubeflow Trainer ``trainer.kubeflow.org/v1alpha1`` TrainJob manifest from plain parameters, for
the Trainer release the cluster runs.

A TrainJob names a training runtime (``runtimeRef``: a ``ClusterTrainingRuntime`` such as ``torch-distributed``, or
a namespaced ``TrainingRuntime``) and fills in its ``trainer``: image, command, args, env, ``numNodes``,
``numProcPerNode`` and ``resourcesPerNode``. Placement and mounts (node selector, tolerations, ``/dev/shm``, the
Secrets, the ServiceAccount) have no ``trainer`` field; they go through the override field of the runtime's pod
template, which changed from release to release (``OVERRIDE_FIELD``): ``podTemplateOverrides`` in v2.1,
``runtimePatches`` from v2.2 on. The backstop against a job outliving its step is the TrainJob's
``activeDeadlineSeconds`` from v2.2 on; v2.1 has none, and its override field cannot set the pods' own, so there the
trainer's command runs under ``components.train.deadline`` with the same deadline as a wall-clock time.

Everything is checked here, before anything is sent, with an error naming the bad value and what would be valid;
also the rules of Trainer's admission webhook (the torch plugin's reserved ``PET_*`` variables). The tests validate
generated manifests against each supported release's CRD (``../shared/reference/crds/``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from components.common.descriptions import option
from components.common.kube.kinds import QUEUE_LABEL
from components.common.kube.replicas import (
    POD_ANNOTATIONS,
    ReplicaConfig,
    environment,
    is_int,
    placement,
    pod_labels,
    replica_problems,
    resources,
    volumes_and_mounts,
)
from components.common.kube.values import InvalidValue, is_label_value, validate_name, validate_namespace

GROUP, VERSION, KIND = "trainer.kubeflow.org", "v1alpha1", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
TRAINER_RELEASES = ("2.3", "2.1")  # the default first; each is validated against its CRD in the tests
# The field that patches the runtime's pod template, per Trainer release (v2.0 had podSpecOverrides).
OVERRIDE_FIELD = {"2.1": "podTemplateOverrides", "2.3": "runtimePatches"}
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
DEFAULT_RUNTIME = "torch-distributed"
NODE = "node"  # the runtime's replicated job and container that the trainer fills in (Trainer's constants.Node)
# What the torch plugin sets in the node container; the webhook refuses a TrainJob that sets them itself.
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
PATCH_MANAGER = "kfp-torch-lifecycle/launcher"  # a runtime patch's owner: a domain-prefixed path
MOST_LIST_ITEMS = 128  # the CRD's maxItems for trainer.command, args and env
DEADLINE_WRAPPER = ["python", "-m", "components.train.deadline", "--until"]


class ManifestError(InvalidValue):
    """A parameter that cannot make a valid TrainJob."""


@dataclass
class TrainJobConfig(ReplicaConfig):
    """Everything that shapes the TrainJob, apart from its name and namespace (decided at run time)."""

    num_nodes: int = option(2, "Training pods (the TrainJob's numNodes: the runtime's node replicated job).")
    runtime: str = option(
        DEFAULT_RUNTIME, f"The training runtime the TrainJob refers to; {DEFAULT_RUNTIME} is the one Trainer installs."
    )
    runtime_kind: str = option(
        "ClusterTrainingRuntime",
        f"The runtime's kind: {' or '.join(RUNTIME_KINDS)} (cluster-wide, or in the TrainJob's namespace).",
    )
    trainer_release: str = option(
        TRAINER_RELEASES[0],
        f"The Kubeflow Trainer release the cluster runs, {' or '.join(TRAINER_RELEASES)}: it "
        "decides the field that carries placement and mounts (runtimePatches, podTemplateOverrides) and the deadline.",
    )
    queue_name: str = option(
        "",
        "A Kueue LocalQueue to queue a TrainJob in (the kueue.x-k8s.io/queue-name label); empty for none. A "
        "PyTorchJob is not queued.",
    )
    active_deadline_seconds: int = option(
        0,
        "The backstop that stops the pods even when this step was killed before its own cleanup (the "
        "TrainJob's activeDeadlineSeconds; on Trainer 2.1 a deadline around the node's command); 0: the step "
        "sets timeout_seconds plus 10 minutes.",
    )

    def validate(self) -> None:
        problems = replica_problems(self)
        if not (is_int(self.num_nodes) and self.num_nodes >= 1):
            problems.insert(2, f"num_nodes must be an integer >= 1, got {self.num_nodes!r}")
        if self.trainer_release not in TRAINER_RELEASES:
            problems.append(
                f"trainer_release must be one of {', '.join(TRAINER_RELEASES)} (the Kubeflow Trainer release the "
                f"cluster runs), got {self.trainer_release!r}"
            )
        if self.runtime_kind not in RUNTIME_KINDS:
            problems.append(f"runtime_kind must be one of {', '.join(RUNTIME_KINDS)}, got {self.runtime_kind!r}")
        try:
            validate_namespace(self.runtime)  # runtimes are named like any object; a DNS-1123 label is what's safe
        except InvalidValue:
            problems.append(
                f"runtime {self.runtime!r} is not a runtime's name (a DNS-1123 label like {DEFAULT_RUNTIME})"
            )
        if not is_label_value(self.queue_name):
            problems.append(f"queue_name {self.queue_name!r} is not a valid label value (a Kueue LocalQueue's name)")
        reserved = sorted(set(self.env) & set(RESERVED_ENV))
        if reserved:
            problems.append(
                f"env must not set {', '.join(reserved)}: Kubeflow Trainer's torch plugin sets them in every node "
                "(and its webhook refuses a TrainJob that sets them)"
            )
        if not (is_int(self.active_deadline_seconds) and self.active_deadline_seconds >= 0):
            problems.append(f"active_deadline_seconds must be an integer >= 0, got {self.active_deadline_seconds!r}")
        if len(self.command) > MOST_LIST_ITEMS or len(self.env) > MOST_LIST_ITEMS:
            problems.append(f"a TrainJob takes at most {MOST_LIST_ITEMS} command items and environment variables")
        if problems:
            raise ManifestError("; ".join(problems))


def build_manifest(
    config: TrainJobConfig, name: str, namespace: str, args: list[str], now: float | None = None
) -> dict[str, Any]:
    """The TrainJob to create, for ``config.trainer_release``, after checking every parameter. ``now`` (seconds
    since the epoch) dates v2.1's deadline."""
    config.validate()
    try:
        validate_name(name)  # Trainer's CEL rule: an RFC 1035 label of at most 63 characters
        validate_namespace(namespace)
    except InvalidValue as error:
        raise ManifestError(str(error)) from None
    if len(args) > MOST_LIST_ITEMS:
        raise ManifestError(f"a TrainJob takes at most {MOST_LIST_ITEMS} arguments, got {len(args)}")
    command = list(config.command)
    spec: dict[str, Any] = {"runtimeRef": {"name": config.runtime, "apiGroup": GROUP, "kind": config.runtime_kind}}
    if config.active_deadline_seconds:
        if config.trainer_release == "2.1":
            until = math.ceil((time.time() if now is None else now) + config.active_deadline_seconds)
            command = [*DEADLINE_WRAPPER, str(until), "--", *command]
        else:
            spec["activeDeadlineSeconds"] = config.active_deadline_seconds
    spec["trainer"] = {
        "image": config.image,
        "command": command,
        "args": list(args),
        "numNodes": config.num_nodes,
        "numProcPerNode": config.nproc_per_node,
        "resourcesPerNode": resources(config),
        **({"env": environment(config)} if config.env else {}),
    }
    pod_template = _pod_template(config)
    if config.trainer_release == "2.1":
        spec["podTemplateOverrides"] = [{"targetJobs": [{"name": NODE}], **pod_template}]
    else:
        replicated_job = {"name": NODE, "template": {"spec": {"template": pod_template}}}
        patch = {"template": {"spec": {"replicatedJobs": [replicated_job]}}}
        spec["runtimePatches"] = [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": patch}]
    labels = pod_labels(config) | ({QUEUE_LABEL: config.queue_name} if config.queue_name else {})
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def _pod_template(config: TrainJobConfig) -> dict[str, Any]:
    """The node pods' metadata and spec, as the override field patches them into the runtime's template."""
    volumes, mounts = volumes_and_mounts(config)
    pod_spec: dict[str, Any] = dict(placement(config))
    if volumes:
        pod_spec["volumes"] = volumes
        pod_spec["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    return {"metadata": {"annotations": dict(POD_ANNOTATIONS), "labels": pod_labels(config)}, "spec": pod_spec}


def training_command() -> list[str]:
    """The node command for the library's training: always torchrun, which reads the torch plugin's ``PET_*``
    variables (nodes, node rank from the Job's completion index, processes per node, the master's address)."""
    return ["python", "-m", "torch.distributed.run", "-m", "components.train.cli"]
