"""What every deploy target takes and gives: the request (checked before anything is applied), the ``Target``
protocol, the revisions a target reports, and the hook that turns a served address into a URL.

A ``DeployRequest`` holds everything a target needs: where (``target``, ``namespace``, ``name``), what (``image``
by digest for the cluster targets, ``bento`` for ``local``), the lineage labels, the serving capacity and the
cluster's settings (ServiceAccount, image pull Secret names, KServe's mode and version). ``validate`` raises
``InvalidValue`` naming the bad value and what would be valid.

A ``Target`` (``kserve`` and ``deployment`` in ``cluster_targets``, ``local`` in ``local_target``) applies a
request idempotently, waits for the rollout by its platform's rules, rolls back to an earlier ``Revision``, and
removes a first deployment that failed. ``components.deploy.deploy.run_deploy`` drives it.

URLs: a target builds a ``ServiceAddress`` for the revision it rolled out and hands it to its ``resolve_url``
(``in_cluster_url`` by default: the Service's cluster DNS name, which a step running in the cluster reaches).
Tests replace it to map what an address serves to a real local server.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from components.common.kube.values import (
    DNS_1123_SUBDOMAIN,
    InvalidValue,
    is_label_value,
    is_resource_quantity,
    validate_name,
    validate_namespace,
)

TARGETS = ("kserve", "deployment", "local")
CLUSTER_TARGETS = ("kserve", "deployment")
SERVING_PORT = 3000  # BentoML's port
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/livez"
NAME_LIMIT = 63
# KServe's deployment modes as this library names them, and the names a KServe release accepts in the
# serving.kserve.io/deploymentMode annotation: 0.17 renamed RawDeployment to Standard and Serverless to Knative
# (kserve/kserve#4608; the old names still work, deprecated); earlier releases know only the old names and fall
# back to the cluster's default mode for any other value (GetDeploymentMode, pkg/controller/.../utils.go).
KSERVE_MODES = ("standard", "knative")
KSERVE_MODE_ALIASES = {
    "standard": "standard",
    "rawdeployment": "standard",
    "knative": "knative",
    "serverless": "knative",
}
KSERVE_RENAMED_IN = (0, 17)
KSERVE_MODE_NAMES = {"standard": ("RawDeployment", "Standard"), "knative": ("Serverless", "Knative")}
# Scale metrics: an HPA scales on CPU or memory utilisation (the deployment target, KServe's Standard mode);
# Knative's autoscaler (KServe's Knative mode) on concurrency or requests per second.
SCALE_METRICS = {"deployment": ("cpu", "memory"), "standard": ("cpu", "memory"), "knative": ("concurrency", "rps")}
IMAGE_BY_DIGEST = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?@sha256:(?P<digest>[0-9a-f]{64})$"
)
LABEL_KEY = re.compile(r"^(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# Labels every target puts on what it creates; the values are lineage_labels'.
MODEL_TAG_LABEL = "kfp-torch-lifecycle/model-tag"
DATASET_COMMIT_LABEL = "kfp-torch-lifecycle/dataset-commit"
PIPELINE_RUN_LABEL = "kfp-torch-lifecycle/pipeline-run"


@dataclass(frozen=True)
class DeployRequest:
    """One deployment: what to serve, where, with what capacity and which of the cluster's settings.

    ``replicas`` are per revision: ``min_replicas`` to ``max_replicas``, scaled on ``scale_metric`` at
    ``scale_target`` (percent utilisation for cpu and memory, requests in flight or per second for Knative's
    concurrency and rps). ``cpu``/``memory`` are each replica's requests, ``cpu_limit``/``memory_limit`` its
    limits. ``image_pull_secrets`` are Secret NAMES the cluster already holds; ``service_account`` the
    ServiceAccount the serving pods run as ("" for the namespace's default). ``canary_percent`` (None: no canary)
    sends that share of the traffic to the new image beside the one serving now.
    """

    target: str
    name: str
    namespace: str = ""
    image: str = ""
    bento: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    min_replicas: int = 1
    max_replicas: int = 3
    scale_metric: str = "cpu"
    scale_target: int = 80
    cpu: str = "500m"
    memory: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    service_account: str = ""
    image_pull_secrets: tuple[str, ...] = ()
    kserve_mode: str = "standard"
    kserve_version: str = "0.20"
    canary_percent: int | None = None
    progress_deadline_seconds: int = 600

    @property
    def is_cluster(self) -> bool:
        return self.target in CLUSTER_TARGETS

    @property
    def mode(self) -> str:
        """KServe's mode, as this library names it: ``standard`` or ``knative``."""
        return KSERVE_MODE_ALIASES.get(str(self.kserve_mode).lower(), str(self.kserve_mode))

    @property
    def kserve_mode_annotation(self) -> str:
        """The ``serving.kserve.io/deploymentMode`` value the cluster's KServe release accepts for ``mode``."""
        old, new = KSERVE_MODE_NAMES[self.mode]
        return new if kserve_release(self.kserve_version) >= KSERVE_RENAMED_IN else old

    @property
    def canary(self) -> bool:
        return self.canary_percent is not None

    def validate(self) -> None:
        """Raise ``InvalidValue`` for the first problem found, naming the value and what would be valid."""
        problems = self.problems()
        if problems:
            raise InvalidValue("; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem of the request, each naming the bad value and what would be valid."""
        if self.target not in TARGETS:
            return [f"target {self.target!r} is not one of {', '.join(TARGETS)}"]
        problems: list[str] = []
        problems += _checked(lambda: validate_name(self.name, "service name"))
        if self.is_cluster:
            problems += self._cluster_problems()
        elif not self.bento:
            problems.append("target local serves a bento: give the bento archive (build_bento's output)")
        for key, value in self.labels.items():
            if not isinstance(key, str) or not LABEL_KEY.match(key):
                problems.append(f"label key {key!r} is not a Kubernetes label key ([prefix/]name, name <= 63)")
            if not is_label_value(value):
                problems.append(
                    f"label {key}={value!r} is not a label value: at most 63 letters, digits, '-', '_' or '.', "
                    "starting and ending with a letter or digit (lineage_labels makes them)"
                )
        for parameter in ("min_replicas", "max_replicas", "scale_target", "progress_deadline_seconds"):
            value = getattr(self, parameter)
            if not _is_int(value) or value < 1:
                problems.append(f"{parameter} must be an integer >= 1, got {value!r}")
        if _is_int(self.min_replicas) and _is_int(self.max_replicas) and self.max_replicas < self.min_replicas:
            problems.append(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        if self.canary_percent is not None and (
            not _is_int(self.canary_percent) or not 0 <= self.canary_percent <= 100
        ):
            problems.append(
                f"canary_percent must be an integer from 0 to 100 (or None: no canary), got {self.canary_percent!r}"
            )
        return problems

    def _cluster_problems(self) -> list[str]:
        problems = (
            _checked(lambda: validate_namespace(self.namespace))
            if self.namespace
            else [f"target {self.target} needs a namespace (the Kubeflow profile namespace to serve in)"]
        )
        longest = f"{self.name}{'-predictor' if self.target == 'kserve' else '-canary'}"
        if isinstance(self.name, str) and len(longest) > NAME_LIMIT:
            problems.append(
                f"service name {self.name!r} is too long: {self.target} names {longest!r} after it, which must fit "
                f"{NAME_LIMIT} characters (at most {NAME_LIMIT - len(longest) + len(self.name)} for the name)"
            )
        if not isinstance(self.image, str) or not IMAGE_BY_DIGEST.match(self.image):
            problems.append(
                f"image {self.image!r} is not pinned by digest: give repository@sha256:<64 hex digits> "
                "(containerize's output); a tag can move under a running service"
            )
        metrics = SCALE_METRICS["deployment" if self.target == "deployment" else self.mode] if self._mode_ok() else ()
        if self.target == "kserve" and not self._mode_ok():
            problems.append(f"kserve_mode {self.kserve_mode!r} is not one of {', '.join(KSERVE_MODE_ALIASES)}")
        elif self.scale_metric not in metrics:
            where = "target deployment" if self.target == "deployment" else f"KServe's {self.mode} mode"
            problems.append(f"scale_metric {self.scale_metric!r} is not one of {', '.join(metrics)} ({where})")
        if self.target == "kserve":
            try:
                kserve_release(self.kserve_version)
            except InvalidValue as error:
                problems.append(str(error))
            if self.canary and self._mode_ok() and self.mode == "standard":
                problems.append(
                    "a canary with target kserve needs kserve_mode knative: KServe applies canaryTrafficPercent to "
                    "Knative revisions only and ignores it in Standard mode (0.15 to 0.20, ksvc_reconciler.go); use "
                    "kserve_mode knative, or target deployment (a second Deployment behind the same Service)"
                )
        for parameter in ("cpu", "memory", "cpu_limit", "memory_limit"):
            value = getattr(self, parameter)
            if not is_resource_quantity(value):
                problems.append(f"{parameter} {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi, 512Mi)")
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            low, high = getattr(self, request), getattr(self, limit)
            if is_resource_quantity(low) and is_resource_quantity(high) and quantity(low) > quantity(high):
                problems.append(f"{request} {low} is above {limit} {high}: a request must not exceed its limit")
        if self.service_account and not _is_subdomain(self.service_account):
            problems.append(
                f"service_account {self.service_account!r} is not a ServiceAccount name (DNS-1123 subdomain)"
            )
        if isinstance(self.image_pull_secrets, (str, bytes)):
            problems.append("image_pull_secrets is a list of Secret names, not one string")
        else:
            for secret in self.image_pull_secrets:
                if not _is_subdomain(secret):
                    problems.append(
                        "image_pull_secrets names Secrets the namespace holds; "
                        f"{_shown(secret)} is not a Secret name (DNS-1123 subdomain)"
                    )
        return problems

    def _mode_ok(self) -> bool:
        return self.target != "kserve" or self.mode in KSERVE_MODES


@dataclass(frozen=True)
class Revision:
    """What serves (or served): its image and the name its platform gives it (a KServe revision, a Deployment's
    generation, a local server's process). ``manifests``: what it was applied with, to apply it again."""

    image: str
    name: str
    manifests: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Applied:
    """The outcome of ``Target.apply``: whether anything changed, what served before, and the manifests sent
    (for the step's output artifact). ``marker`` is the target's own note of what to wait for."""

    request: DeployRequest
    changed: bool
    previous: Revision | None
    manifests: tuple[dict[str, Any], ...]
    marker: Mapping[str, Any] = field(default_factory=dict)


class RolloutFailed(RuntimeError):
    """The new revision did not become ready: the pods' own reasons, or the platform's verdict."""


@dataclass(frozen=True)
class ServiceAddress:
    """Where a revision is served: ``host`` (the cluster DNS name; 127.0.0.1 for local) and ``port``, with the
    image it serves, for a resolver that maps addresses to URLs."""

    name: str
    namespace: str
    host: str
    port: int
    image: str
    revision: str = ""
    scheme: str = "http"


UrlResolver = Callable[[ServiceAddress], str]


def in_cluster_url(address: ServiceAddress) -> str:
    """The base URL a pod in the cluster reaches the address at."""
    return f"{address.scheme}://{address.host}:{address.port}"


@runtime_checkable
class Target(Protocol):
    """A place to serve a model. ``deadline`` values are ``time.monotonic()`` instants."""

    def current(self) -> Revision | None:
        """What serves now; None when nothing does."""

    def apply(self, request: DeployRequest) -> Applied:
        """Serve ``request`` (idempotent: ``changed`` False when it already does, and nothing was sent)."""

    def wait_ready(self, applied: Applied, deadline: float) -> str:
        """Wait until the new revision is rolled out; its base URL. Raises ``RolloutFailed`` with the reasons."""

    def rollback(self, previous: Revision, deadline: float) -> None:
        """Serve ``previous`` again, and wait until it is healthy."""

    def remove(self) -> None:
        """Delete what a first deployment created."""


@runtime_checkable
class CanaryTarget(Target, Protocol):
    """A target that can serve a new image beside the one serving now, on a share of the traffic."""

    def promote_canary(self, request: DeployRequest, deadline: float) -> str:
        """All traffic to the canary's image, rolled out as a normal update; the stable base URL."""

    def rollback_canary(self, request: DeployRequest, deadline: float) -> None:
        """All traffic back to the stable revision, the canary removed; wait until the stable one is healthy."""


def lineage_labels(model_tag: str, dataset_commit: str, pipeline_run: str) -> dict[str, str]:
    """The lineage labels, their values made label-safe (a BentoML tag's ':' becomes '.'; a value over 63
    characters is cut and ends with a digest of the whole, so that two values never share a label)."""
    values = {MODEL_TAG_LABEL: model_tag, DATASET_COMMIT_LABEL: dataset_commit, PIPELINE_RUN_LABEL: pipeline_run}
    return {key: label_safe(value) for key, value in values.items() if value}


def label_safe(value: str) -> str:
    text = re.sub(r"[^-A-Za-z0-9_.]+", ".", str(value)).strip("-_.")
    if len(text) > NAME_LIMIT:
        digest = hashlib.sha256(str(value).encode()).hexdigest()[:10]
        text = f"{text[: NAME_LIMIT - 11].rstrip('-_.')}-{digest}"
    return text


def kserve_release(version: str) -> tuple[int, int]:
    """(major, minor) of a KServe release given as ``0.15``, ``0.15.2`` or ``v0.20.0``."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?", str(version).strip())
    if not match:
        raise InvalidValue(f"kserve_version {version!r} is not a KServe release such as 0.15, 0.15.2 or v0.20.0")
    return int(match[1]), int(match[2])


QUANTITY_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
}


def quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity (checked with ``is_resource_quantity`` first)."""
    match = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?", text)
    number, suffix = Decimal(match[1]), match[2] or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * QUANTITY_SUFFIXES[suffix]


def _checked(check: Callable[[], None]) -> list[str]:
    try:
        check()
    except InvalidValue as error:
        return [str(error)]
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_subdomain(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= 253 and bool(DNS_1123_SUBDOMAIN.match(name))


def _shown(value: Any) -> str:
    """A bad Secret name, shown only when it cannot be a credential pasted in by mistake."""
    text = str(value)
    return repr(text) if len(text) <= 63 and re.fullmatch(r"[-\w.]*", text) else f"a value of {len(text)} characters"


__all__ = [
    "Applied",
    "CanaryTarget",
    "DeployRequest",
    "InvalidValue",
    "Revision",
    "RolloutFailed",
    "ServiceAddress",
    "Target",
    "UrlResolver",
    "in_cluster_url",
    "lineage_labels",
]
