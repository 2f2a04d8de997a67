"""What every kind of distributed job asks of its replica pods: image and command, processes, resources, placement,
``/dev/shm``, environment, Secrets mounted as volumes, ServiceAccount; checked and turned into pod spec fragments.

``ReplicaConfig`` is the part of a job's configuration that does not depend on the kind (a PyTorchJob's replica
template, a TrainJob's ``trainer`` and override field both carry it); each kind's config subclasses it and adds its
own fields and checks. ``replica_problems`` collects every problem, so that one error names them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from components.common.descriptions import option
from components.common.kube.values import (
    DNS_1123_SUBDOMAIN,
    is_env_name,
    is_extended_resource,
    is_label_value,
    is_resource_quantity,
    looks_like_secret,
    toleration_problems,
)

SHM_VOLUME = "dshm"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kfp-torch-lifecycle"}
# Istio's sidecar would keep a finished replica pod running (and its Job incomplete) and sits between the replicas.
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}

Config = TypeVar("Config", bound="ReplicaConfig")


@dataclass
class ReplicaConfig:
    """The settings of a training pod, each described once (``field_descriptions``: the job components' docstrings
    take them from here)."""

    image: str = option(description="The training container's image.")
    command: list[str] = option(description="The training container's command (torchrun and what it runs).")
    nproc_per_node: int = option(
        1, "Training processes per pod (torchrun's nproc_per_node); at most gpus when GPUs are asked for."
    )
    cpu: str = option("2", "CPU request per pod, a Kubernetes quantity such as 4 or 500m.")
    memory: str = option("8Gi", "Memory request and limit per pod, a Kubernetes quantity such as 16Gi.")
    gpus: int = option(0, "GPUs per pod, counted in accelerator_type; 0: a CPU pod.")
    accelerator_type: str = option(
        "nvidia.com/gpu", "The extended resource the GPUs are counted in, e.g. nvidia.com/gpu or amd.com/gpu."
    )
    node_selector: dict[str, str] = option(
        description="Node labels the training pods must run on; {} for any node.", default_factory=dict
    )
    tolerations: list[dict[str, Any]] = option(
        description="Tolerations of the training pods, as Kubernetes writes them; [] for none.", default_factory=list
    )
    shm_size: str = option(
        "2Gi", 'Size of the pods\' /dev/shm (an emptyDir in memory) for DataLoader workers and NCCL; "" for none.'
    )
    env: dict[str, str] = option(
        description="Environment variables of the training container (no credentials: those are refused).",
        default_factory=dict,
    )
    secret_volumes: dict[str, str] = option(
        description="Secrets mounted into the pods as read-only volumes, Secret name -> mount path; their contents "
        "are never passed as values.",
        default_factory=dict,
    )
    optional_secret_volumes: dict[str, str] = option(
        description="Secrets mounted when they exist (the artifact store's credentials, needed only for minio:// "
        "and s3:// URIs), Secret name -> mount path; a pod starts without them.",
        default_factory=dict,
    )
    service_account: str = option("", "The pods' ServiceAccount; empty for the namespace's default.")
    labels: dict[str, str] = option(description="Labels of the pods.", default_factory=dict)

    @classmethod
    def from_parameters(cls: type[Config], parameters: Mapping[str, Any], **given: Any) -> Config:
        """The config from a component's parameters (the fields of this class; others are ignored), ``given``
        taking the place of parameters of the same name (the image and command the step decides)."""
        names = {item.name for item in fields(cls)}
        return cls(**{name: value for name, value in parameters.items() if name in names} | given)


def replica_problems(config: ReplicaConfig) -> list[str]:
    """Every value of ``config`` the API server or the job's controller would refuse, named, with what is valid."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(
        bool(config.image) and isinstance(config.image, str), f"image must be a container image, got {config.image!r}"
    )
    check(
        isinstance(config.command, list) and bool(config.command) and all(isinstance(c, str) for c in config.command),
        f"command must be a non-empty list of strings, got {config.command!r}",
    )
    check(
        is_int(config.nproc_per_node) and config.nproc_per_node >= 1,
        f"nproc_per_node must be an integer >= 1, got {config.nproc_per_node!r}",
    )
    check(is_int(config.gpus) and config.gpus >= 0, f"gpus must be an integer >= 0, got {config.gpus!r}")
    check(
        is_extended_resource(config.accelerator_type),
        "accelerator_type must be an extended resource name like 'nvidia.com/gpu' or 'amd.com/gpu', "
        f"got {config.accelerator_type!r}",
    )
    if is_int(config.gpus) and is_int(config.nproc_per_node) and config.gpus and config.nproc_per_node > config.gpus:
        problems.append(
            f"nproc_per_node={config.nproc_per_node} exceeds gpus={config.gpus} per pod: one process per GPU"
        )
    for name in ("cpu", "memory"):
        value = getattr(config, name)
        check(
            is_resource_quantity(value),
            f"{name} must be a Kubernetes quantity like '2', '500m', '8Gi', not negative (suffixes Ki Mi Gi Ti "
            f"Pi Ei, n u m k M G T P E, or an exponent like 1e3), got {value!r}",
        )
    check(
        config.shm_size == "" or is_resource_quantity(config.shm_size),
        f"shm_size must be a Kubernetes quantity like '2Gi', not negative, or '' for none, got {config.shm_size!r}",
    )
    for key, value in config.node_selector.items():
        check(isinstance(value, str), f'node_selector[{key!r}] must be a string such as "true", got {value!r}')
    for i, toleration in enumerate(config.tolerations):
        problems += toleration_problems(i, toleration)
    for name, value in config.env.items():
        check(is_env_name(name), f"env name {name!r} is not a valid environment variable name")
        check(isinstance(value, str), f"env[{name!r}] must be a string")
        check(
            not looks_like_secret(name),
            f"env {name!r} looks like a credential; mount it from a Kubernetes Secret with secret_volumes",
        )
    for secret, path in {**config.secret_volumes, **config.optional_secret_volumes}.items():
        check(bool(DNS_1123_SUBDOMAIN.match(secret)), f"secret name {secret!r} is not a DNS-1123 subdomain")
        check(isinstance(path, str) and path.startswith("/"), f"mount path for secret {secret!r} must be absolute")
    both = sorted(set(config.secret_volumes) & set(config.optional_secret_volumes))
    check(not both, f"secret(s) {', '.join(both)} are in both secret_volumes and optional_secret_volumes")
    paths = [*config.secret_volumes.values(), *config.optional_secret_volumes.values()]
    check(len(set(paths)) == len(paths), f"two secrets would be mounted at the same path: {sorted(paths)}")
    check(
        config.service_account == "" or bool(DNS_1123_SUBDOMAIN.match(config.service_account)),
        f"service_account {config.service_account!r} is not a DNS-1123 subdomain",
    )
    for key, value in config.labels.items():
        check(is_label_value(value), f"label {key}={value!r} is not a valid label value")
    return problems


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resources(config: ReplicaConfig) -> dict[str, Any]:
    """Requests and limits of a replica's training container; GPUs as the accelerator's extended resource."""
    requested: dict[str, Any] = {
        "requests": {"cpu": config.cpu, "memory": config.memory},
        "limits": {"memory": config.memory},
    }
    if config.gpus:
        requested["requests"][config.accelerator_type] = config.gpus
        requested["limits"][config.accelerator_type] = config.gpus
    return requested


def volumes_and_mounts(config: ReplicaConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the pod's volumes, the training container's mounts): ``/dev/shm`` in memory, then each Secret read-only."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if config.shm_size:
        # DataLoader workers and NCCL share memory through /dev/shm; the container default is 64 MiB.
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    secrets = [(secret, path, False) for secret, path in sorted(config.secret_volumes.items())]
    secrets += [(secret, path, True) for secret, path in sorted(config.optional_secret_volumes.items())]
    for i, (secret, path, optional) in enumerate(secrets):
        volume = f"secret-{i}"
        volumes.append({"name": volume, "secret": {"secretName": secret, **({"optional": True} if optional else {})}})
        mounts.append({"name": volume, "mountPath": path, "readOnly": True})
    return volumes, mounts


def placement(config: ReplicaConfig) -> dict[str, Any]:
    """The pod spec's node selector, tolerations and ServiceAccount, where set."""
    spec: dict[str, Any] = {}
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return spec


def environment(config: ReplicaConfig) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(config.env.items())]


def pod_labels(config: ReplicaConfig) -> dict[str, str]:
    return {**MANAGED_BY, **config.labels}
