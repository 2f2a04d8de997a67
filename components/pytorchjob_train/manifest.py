"""Build and check a ``kubeflow.org/v1`` PyTorchJob manifest from plain parameters.

Everything is checked here, before anything is sent to the cluster, with an
error that names the bad value and what would be valid. Generated manifests
are validated in the tests against the real CRD schema
(``../shared/reference/crds/kubeflow.org_pytorchjobs.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.common.descriptions import option
from components.common.kube.replicas import (
    POD_ANNOTATIONS,
    SHM_VOLUME,
    ReplicaConfig,
    environment,
    is_int,
    placement,
    pod_labels,
    replica_problems,
    resources,
    volumes_and_mounts,
)
from components.common.kube.values import InvalidValue, validate_name, validate_namespace

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the Training Operator looks for this container name
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("All", "Running", "None")
__all__ = ["SHM_VOLUME", "ManifestError", "PyTorchJobConfig", "build_manifest", "training_command"]


class ManifestError(InvalidValue):
    """A parameter that cannot make a valid PyTorchJob."""


@dataclass
class PyTorchJobConfig(ReplicaConfig):
    """Everything that shapes the job, apart from its name and namespace (decided at run time)."""

    num_workers: int = option(2, "Training pods in all: 1 Master (rank 0) and num_workers - 1 Workers.")
    restart_policy: str = option(
        "OnFailure", f"What the operator does when a replica's container exits: {', '.join(RESTART_POLICIES)}."
    )
    clean_pod_policy: str = option(
        "All", f"Which pods the operator deletes when the job ends: {', '.join(CLEAN_POD_POLICIES)}."
    )
    ttl_seconds_after_finished: int = option(
        3600, "Seconds after the job ends before the operator deletes it (the step deletes it first)."
    )
    active_deadline_seconds: int = option(
        0,
        "The job's activeDeadlineSeconds, the backstop that stops its pods even when this step was killed "
        "before its own cleanup; 0: the step sets timeout_seconds plus 10 minutes.",
    )
    backoff_limit: int = option(0, "Retries of the job before the operator marks it failed.")

    def validate(self) -> None:
        problems = replica_problems(self)
        if not (is_int(self.num_workers) and self.num_workers >= 1):
            problems.insert(2, f"num_workers must be an integer >= 1, got {self.num_workers!r}")
        if self.restart_policy not in RESTART_POLICIES:
            problems.append(f"restart_policy must be one of {', '.join(RESTART_POLICIES)}, got {self.restart_policy!r}")
        if self.clean_pod_policy not in CLEAN_POD_POLICIES:
            problems.append(
                f"clean_pod_policy must be one of {', '.join(CLEAN_POD_POLICIES)}, got {self.clean_pod_policy!r}"
            )
        for name in ("ttl_seconds_after_finished", "active_deadline_seconds", "backoff_limit"):
            value = getattr(self, name)
            if not (is_int(value) and value >= 0):
                problems.append(f"{name} must be an integer >= 0, got {value!r}")
        if problems:
            raise ManifestError("; ".join(problems))


def build_manifest(config: PyTorchJobConfig, name: str, namespace: str, args: list[str]) -> dict[str, Any]:
    """The PyTorchJob object to create, after checking every parameter."""
    config.validate()
    try:
        validate_name(name)  # the operator names pods and Services after the job: a DNS-1035 label
        validate_namespace(namespace)
    except InvalidValue as error:
        raise ManifestError(str(error)) from None

    template = _pod_template(config, args)
    replica = {"restartPolicy": config.restart_policy, "template": template}
    replica_specs: dict[str, Any] = {"Master": {"replicas": 1, **replica}}
    if config.num_workers > 1:
        replica_specs["Worker"] = {"replicas": config.num_workers - 1, **replica}
    run_policy: dict[str, Any] = {
        "cleanPodPolicy": config.clean_pod_policy,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "backoffLimit": config.backoff_limit,
    }
    if config.active_deadline_seconds:
        run_policy["activeDeadlineSeconds"] = config.active_deadline_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod_labels(config),
        },
        "spec": {
            "nprocPerNode": str(config.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def _pod_template(config: PyTorchJobConfig, args: list[str]) -> dict[str, Any]:
    volumes, mounts = volumes_and_mounts(config)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(config.command),
        "args": list(args),
        "env": environment(config),
        "resources": resources(config),
        "volumeMounts": mounts,
    }
    return {
        "metadata": {"annotations": dict(POD_ANNOTATIONS), "labels": pod_labels(config)},
        "spec": {"containers": [container], "volumes": volumes, **placement(config)},
    }


def training_command(nproc_per_node: int) -> list[str]:
    """The replica command: torchrun (which reads the PET_* variables) when several processes share a pod."""
    if nproc_per_node > 1:
        return ["python", "-m", "torch.distributed.run", "-m", "components.train.cli"]
    return ["python", "-m", "components.train.cli"]
