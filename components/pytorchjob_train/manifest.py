"""Build and check a ``kubeflow.org/v1`` PyTorchJob manifest from plain parameters.

Everything is checked here, before anything is sent to the cluster, with an
error that names the bad value and what would be valid. Generated manifests
are validated in the tests against the real CRD schema
(``../shared/reference/crds/kubeflow.org_pytorchjobs.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.common.kube.values import (
    DNS_1123_SUBDOMAIN,
    InvalidValue,
    is_env_name,
    is_extended_resource,
    is_label_value,
    is_resource_quantity,
    looks_like_secret,
    toleration_problems,
    validate_name,
    validate_namespace,
)

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the Training Operator looks for this container name
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("All", "Running", "None")
SHM_VOLUME = "dshm"


class ManifestError(InvalidValue):
    """A parameter that cannot make a valid PyTorchJob."""


@dataclass
class PyTorchJobConfig:
    """Everything that shapes the job, apart from its name and namespace (decided at run time)."""

    image: str
    command: list[str]
    num_workers: int = 2  # training pods in all: 1 Master (rank 0) + num_workers-1 Workers
    nproc_per_node: int = 1
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    accelerator_type: str = "nvidia.com/gpu"  # the extended resource the GPUs are counted in
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    shm_size: str = "2Gi"  # "" for no /dev/shm volume
    env: dict[str, str] = field(default_factory=dict)
    secret_volumes: dict[str, str] = field(default_factory=dict)  # Secret name -> mount path
    # Secrets the pods start without when they are missing (the artifact store's, needed only for minio:// or s3://).
    optional_secret_volumes: dict[str, str] = field(default_factory=dict)
    service_account: str = ""
    restart_policy: str = "OnFailure"
    clean_pod_policy: str = "All"
    ttl_seconds_after_finished: int = 3600
    active_deadline_seconds: int = 0  # 0: no deadline
    backoff_limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        problems: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        check(bool(self.image) and isinstance(self.image, str), f"image must be a container image, got {self.image!r}")
        check(
            isinstance(self.command, list) and bool(self.command) and all(isinstance(c, str) for c in self.command),
            f"command must be a non-empty list of strings, got {self.command!r}",
        )
        check(
            _int(self.num_workers) and self.num_workers >= 1,
            f"num_workers must be an integer >= 1, got {self.num_workers!r}",
        )
        check(
            _int(self.nproc_per_node) and self.nproc_per_node >= 1,
            f"nproc_per_node must be an integer >= 1, got {self.nproc_per_node!r}",
        )
        check(_int(self.gpus) and self.gpus >= 0, f"gpus must be an integer >= 0, got {self.gpus!r}")
        check(
            is_extended_resource(self.accelerator_type),
            "accelerator_type must be an extended resource name like 'nvidia.com/gpu' or 'amd.com/gpu', "
            f"got {self.accelerator_type!r}",
        )
        if _int(self.gpus) and _int(self.nproc_per_node) and self.gpus and self.nproc_per_node > self.gpus:
            problems.append(
                f"nproc_per_node={self.nproc_per_node} exceeds gpus={self.gpus} per pod: one process per GPU"
            )
        for name in ("cpu", "memory"):
            value = getattr(self, name)
            check(
                is_resource_quantity(value),
                f"{name} must be a Kubernetes quantity like '2', '500m', '8Gi', not negative (suffixes Ki Mi Gi Ti "
                f"Pi Ei, n u m k M G T P E, or an exponent like 1e3), got {value!r}",
            )
        check(
            self.shm_size == "" or is_resource_quantity(self.shm_size),
            f"shm_size must be a Kubernetes quantity like '2Gi', not negative, or '' for none, got {self.shm_size!r}",
        )
        check(
            self.restart_policy in RESTART_POLICIES,
            f"restart_policy must be one of {', '.join(RESTART_POLICIES)}, got {self.restart_policy!r}",
        )
        check(
            self.clean_pod_policy in CLEAN_POD_POLICIES,
            f"clean_pod_policy must be one of {', '.join(CLEAN_POD_POLICIES)}, got {self.clean_pod_policy!r}",
        )
        for name in ("ttl_seconds_after_finished", "active_deadline_seconds", "backoff_limit"):
            value = getattr(self, name)
            check(_int(value) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        for key, value in self.node_selector.items():
            check(isinstance(value, str), f'node_selector[{key!r}] must be a string such as "true", got {value!r}')
        for i, toleration in enumerate(self.tolerations):
            problems += toleration_problems(i, toleration)
        for name, value in self.env.items():
            check(is_env_name(name), f"env name {name!r} is not a valid environment variable name")
            check(isinstance(value, str), f"env[{name!r}] must be a string")
            check(
                not looks_like_secret(name),
                f"env {name!r} looks like a credential; mount it from a Kubernetes Secret with secret_volumes",
            )
        for secret, path in {**self.secret_volumes, **self.optional_secret_volumes}.items():
            check(bool(DNS_1123_SUBDOMAIN.match(secret)), f"secret name {secret!r} is not a DNS-1123 subdomain")
            check(isinstance(path, str) and path.startswith("/"), f"mount path for secret {secret!r} must be absolute")
        both = sorted(set(self.secret_volumes) & set(self.optional_secret_volumes))
        check(not both, f"secret(s) {', '.join(both)} are in both secret_volumes and optional_secret_volumes")
        paths = [*self.secret_volumes.values(), *self.optional_secret_volumes.values()]
        check(len(set(paths)) == len(paths), f"two secrets would be mounted at the same path: {sorted(paths)}")
        check(
            self.service_account == "" or bool(DNS_1123_SUBDOMAIN.match(self.service_account)),
            f"service_account {self.service_account!r} is not a DNS-1123 subdomain",
        )
        for key, value in self.labels.items():
            check(is_label_value(value), f"label {key}={value!r} is not a valid label value")
        if problems:
            raise ManifestError("; ".join(problems))


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
            "labels": {"app.kubernetes.io/managed-by": "kfp-torch-lifecycle", **config.labels},
        },
        "spec": {
            "nprocPerNode": str(config.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def _pod_template(config: PyTorchJobConfig, args: list[str]) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "requests": {"cpu": config.cpu, "memory": config.memory},
        "limits": {"memory": config.memory},
    }
    if config.gpus:
        resources["requests"][config.accelerator_type] = config.gpus
        resources["limits"][config.accelerator_type] = config.gpus
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
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(config.command),
        "args": list(args),
        "env": [{"name": k, "value": v} for k, v in sorted(config.env.items())],
        "resources": resources,
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    if config.node_selector:
        pod_spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    return {
        "metadata": {
            "annotations": {"sidecar.istio.io/inject": "false"},
            "labels": {"app.kubernetes.io/managed-by": "kfp-torch-lifecycle", **config.labels},
        },
        "spec": pod_spec,
    }


def training_command(nproc_per_node: int) -> list[str]:
    """The replica command: torchrun (which reads the PET_* variables) when several processes share a pod."""
    if nproc_per_node > 1:
        return ["python", "-m", "torch.distributed.run", "-m", "components.train.cli"]
    return ["python", "-m", "components.train.cli"]
