"""Build and check a ``kubeflow.org/v1`` PyTorchJob manifest from plain parameters.

Everything is checked here, before anything is sent to the cluster, with an
error that names the bad value and what would be valid. Generated manifests
are validated in the tests against the real CRD schema
(``../shared/reference/crds/kubeflow.org_pytorchjobs.yaml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the Training Operator looks for this container name
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("All", "Running", "None")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute", "")
SECRET_LIKE_ENV = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|ACCESS_KEY|API_KEY)", re.IGNORECASE)
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# k8s.io/apimachinery resource.Quantity: <sign><digits>[.<digits>] or <sign>.<digits>, then a binary suffix
# (Ki ... Ei), a decimal one (n u m "" k M G T P E: lowercase k only) or a decimal exponent (e/E<signed integer>).
# Both ParseQuantity (what the operator's pods go through) and the CRD's pattern accept exactly these.
QUANTITY = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?\Z")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SHM_VOLUME = "dshm"


class ManifestError(ValueError):
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
            problems += _toleration_problems(i, toleration)
        for name, value in self.env.items():
            check(bool(ENV_NAME.match(name)), f"env name {name!r} is not a valid environment variable name")
            check(isinstance(value, str), f"env[{name!r}] must be a string")
            check(
                not SECRET_LIKE_ENV.search(name),
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


def is_quantity(text: Any) -> bool:
    """A string Kubernetes parses as a resource.Quantity: '2', '500m', '1.5', '8Gi', '1e3', '-1' (16K, 1mm,
    5Gi5 and 1.2.3 are not)."""
    return isinstance(text, str) and bool(QUANTITY.match(text))


def is_resource_quantity(text: Any) -> bool:
    """A quantity a pod may request: not negative (the API server rejects negative requests and limits)."""
    return is_quantity(text) and not text.startswith("-")


def is_label_value(value: Any) -> bool:
    """Up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or empty)."""
    return isinstance(value, str) and len(value) <= 63 and bool(LABEL_VALUE.match(value))


def is_extended_resource(name: Any) -> bool:
    """``domain/name``, as device plugins advertise them (``nvidia.com/gpu``, ``amd.com/gpu``)."""
    prefix, _, resource = str(name).rpartition("/")
    return bool(prefix and DNS_1123_SUBDOMAIN.match(prefix) and resource and LABEL_VALUE.match(resource))


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _toleration_problems(index: int, toleration: Any) -> list[str]:
    where = f"tolerations[{index}]"
    if not isinstance(toleration, dict):
        return [f"{where} must be a mapping with keys from {', '.join(sorted(TOLERATION_KEYS))}"]
    problems = []
    unknown = set(toleration) - TOLERATION_KEYS
    if unknown:
        problems.append(
            f"{where} has unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(TOLERATION_KEYS))}"
        )
    operator = toleration.get("operator", "Equal")
    if operator not in TOLERATION_OPERATORS:
        problems.append(f"{where}.operator must be one of {', '.join(TOLERATION_OPERATORS)}, got {operator!r}")
    if operator == "Exists" and toleration.get("value"):
        problems.append(f"{where}: operator Exists takes no value")
    effect = toleration.get("effect", "")
    if effect not in TOLERATION_EFFECTS:
        problems.append(f"{where}.effect must be one of NoSchedule, PreferNoSchedule, NoExecute, got {effect!r}")
    if "tolerationSeconds" in toleration and not _int(toleration["tolerationSeconds"]):
        problems.append(f"{where}.tolerationSeconds must be an integer")
    return problems


def validate_name(name: str, what: str = "job name") -> None:
    """PyTorchJob names become pod and Service names: the operator wants a DNS-1035 label (at most 63 characters,
    starting with a letter)."""
    if not isinstance(name, str) or len(name) > 63 or not DNS_1035_LABEL.match(name):
        raise ManifestError(
            f"{what} {name!r} is not a DNS-1035 label: at most 63 lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )


def validate_namespace(namespace: str) -> None:
    """Namespaces are DNS-1123 labels: at most 63 characters, and may start with a digit ('1team')."""
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS_1123_LABEL.match(namespace):
        raise ManifestError(
            f"namespace {namespace!r} is not a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def build_manifest(config: PyTorchJobConfig, name: str, namespace: str, args: list[str]) -> dict[str, Any]:
    """The PyTorchJob object to create, after checking every parameter."""
    config.validate()
    validate_name(name)
    validate_namespace(namespace)

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
