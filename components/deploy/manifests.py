"""The objects the cluster targets apply, built from a ``DeployRequest``: exactly the fields this library owns.

- ``deployment``: an ``apps/v1`` Deployment (no ``replicas``: the HorizontalPodAutoscaler owns that field), a
  ``v1`` Service in front of it and an ``autoscaling/v2`` HorizontalPodAutoscaler, as the Kubernetes ML-workloads
  exercise lays them out. The rolling update never drops below the serving capacity (``maxUnavailable: 0``,
  one extra pod at a time). A canary is a second Deployment (``<name>-canary``) whose pods the same Service
  selects, weighted by replicas, and a Service of its own (``<name>-canary``) to verify it directly.
- ``kserve``: a ``serving.kserve.io/v1beta1`` InferenceService whose predictor runs the bento image, in the
  deployment mode the cluster's KServe release names (``serving.kserve.io/deploymentMode``).

Every serving container listens on 3000 (BentoML's port), is ready on ``/readyz`` and alive on ``/livez``. In
KServe's Knative mode the probes name no port: Knative probes the serving port itself, and its webhook refused a
probe port in releases KServe still supports (kserve/kserve#804, #2994). Every object carries the lineage labels
and ``app.kubernetes.io`` labels; pod templates carry ``kfp-torch-lifecycle/template``, a digest of the template,
so that a diagnosis finds the pods of one revision.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from components.deploy.target import (
    LIVENESS_PATH,
    PIPELINE_RUN_LABEL,
    READINESS_PATH,
    SERVING_PORT,
    DeployRequest,
)

PART_OF = {"app.kubernetes.io/part-of": "kfp-torch-lifecycle", "app.kubernetes.io/managed-by": "kfp-torch-lifecycle"}
NAME_LABEL = "app.kubernetes.io/name"
TRACK_LABEL = "kfp-torch-lifecycle/track"
TEMPLATE_LABEL = "kfp-torch-lifecycle/template"
# Annotations on the Deployment (or InferenceService): what this library applied (to find it again and to roll
# back to it), what it replaced, and a fingerprint of the settings (the pipeline run aside) for idempotence.
APPLIED_ANNOTATION = "kfp-torch-lifecycle/applied"
PREVIOUS_ANNOTATION = "kfp-torch-lifecycle/previous"
FINGERPRINT_ANNOTATION = "kfp-torch-lifecycle/fingerprint"
KSERVE_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KSERVE_AUTOSCALER_ANNOTATION = "serving.kserve.io/autoscalerClass"
CONTAINER = "bento"
KSERVE_CONTAINER = "kserve-container"  # the predictor container KServe merges with its runtime's
SERVICE_PORT = 80


def labels(request: DeployRequest, track: str = "", pods: bool = False) -> dict[str, str]:
    """The labels of the objects (``pods``: of a pod template, which leaves out the pipeline run: a new run of the
    same image must not make a new revision)."""
    lineage = {key: value for key, value in request.labels.items() if not (pods and key == PIPELINE_RUN_LABEL)}
    return {NAME_LABEL: request.name, **PART_OF, **lineage, **({TRACK_LABEL: track} if track else {})}


def container(request: DeployRequest, name: str, knative: bool = False) -> dict[str, Any]:
    port = {} if knative else {"port": SERVING_PORT}
    return {
        "name": name,
        "image": request.image,
        "ports": [{"containerPort": SERVING_PORT, "protocol": "TCP"}] if knative
        else [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": READINESS_PATH, **port}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, **port},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": request.cpu, "memory": request.memory},
            "limits": {"cpu": request.cpu_limit, "memory": request.memory_limit},
        },
    }  # fmt: skip


def pod_spec(request: DeployRequest) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container(request, CONTAINER)]}
    if request.service_account:
        spec["serviceAccountName"] = request.service_account
    if request.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in request.image_pull_secrets]
    return spec


def deployment(request: DeployRequest, name: str = "", track: str = "stable", replicas: int | None = None) -> dict:
    """The Deployment ``name`` (default: the request's) of one track. ``replicas`` only for a canary: the stable
    Deployment's count belongs to its HorizontalPodAutoscaler."""
    name = name or request.name
    selector = {NAME_LABEL: request.name, TRACK_LABEL: track}
    template_labels = labels(request, track, pods=True)
    spec_template = {"metadata": {"labels": template_labels}, "spec": pod_spec(request)}
    spec_template["metadata"]["labels"] = {**template_labels, TEMPLATE_LABEL: template_digest(spec_template)}
    spec: dict[str, Any] = {
        **({"replicas": replicas} if replicas is not None else {}),
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "progressDeadlineSeconds": request.progress_deadline_seconds,
        "revisionHistoryLimit": 5,
        "template": spec_template,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": request.namespace, "labels": labels(request, track)},
        "spec": spec,
    }


def service(request: DeployRequest, name: str = "", track: str = "") -> dict:
    """The Service ``name``: every track's pods (the main one), or one track's (the canary's own)."""
    selector = {NAME_LABEL: request.name, **({TRACK_LABEL: track} if track else {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name or request.name, "namespace": request.namespace, "labels": labels(request, track)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(request: DeployRequest) -> dict:
    """The HorizontalPodAutoscaler of the stable Deployment: ``min_replicas`` to ``max_replicas`` on the average
    utilisation of ``scale_metric`` (percent of each replica's request)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": request.name, "namespace": request.namespace, "labels": labels(request)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": request.name},
            "minReplicas": request.min_replicas,
            "maxReplicas": request.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": request.scale_metric,
                        "target": {"type": "Utilization", "averageUtilization": request.scale_target},
                    },
                }
            ],
        },
    }


def canary_replicas(stable_replicas: int, percent: int) -> int:
    """Replicas that take ``percent`` of the traffic beside ``stable_replicas`` (a Service spreads connections
    evenly over ready pods): at least one, so that the canary can be verified."""
    if percent >= 100:
        return max(1, stable_replicas)
    return max(1, math.ceil(stable_replicas * percent / (100 - percent)))


def inference_service(request: DeployRequest) -> dict:
    """The InferenceService: the bento image as the predictor's container, the request's scaling and settings."""
    knative = request.mode == "knative"
    predictor: dict[str, Any] = {
        "minReplicas": request.min_replicas,
        "maxReplicas": request.max_replicas,
        "scaleMetric": request.scale_metric,
        "scaleTarget": request.scale_target,
        "containers": [container(request, KSERVE_CONTAINER, knative=knative)],
    }
    if request.service_account:
        predictor["serviceAccountName"] = request.service_account
    if request.image_pull_secrets:
        predictor["imagePullSecrets"] = [{"name": secret} for secret in request.image_pull_secrets]
    if request.canary_percent is not None:
        predictor["canaryTrafficPercent"] = request.canary_percent
    annotations = {KSERVE_MODE_ANNOTATION: request.kserve_mode_annotation}
    if not knative:
        annotations[KSERVE_AUTOSCALER_ANNOTATION] = "hpa"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": labels(request),
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def template_digest(template: dict) -> str:
    return hashlib.sha256(canonical(template).encode()).hexdigest()[:16]


def fingerprint(manifests: list[dict]) -> str:
    """A digest of what the manifests ask for, the pipeline run's label and this library's annotations aside: the
    same image with the same settings from another run changes nothing."""
    stripped = []
    for manifest in manifests:
        manifest = copy.deepcopy(manifest)
        _drop_run_label(manifest)
        for key in (APPLIED_ANNOTATION, PREVIOUS_ANNOTATION, FINGERPRINT_ANNOTATION):
            manifest["metadata"].get("annotations", {}).pop(key, None)
        stripped.append(manifest)
    return hashlib.sha256(canonical(stripped).encode()).hexdigest()[:32]


def _drop_run_label(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("labels"), dict):
            node["labels"].pop(PIPELINE_RUN_LABEL, None)
        for value in node.values():
            _drop_run_label(value)
    elif isinstance(node, list):
        for value in node:
            _drop_run_label(value)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def with_history(manifest: dict, applied: list[dict], previous: str, fingerprint_value: str) -> dict:
    """``manifest`` annotated with what is applied (``applied``, compact JSON), what it replaced (``previous``: the
    earlier ``applied`` annotation, "" for none) and the fingerprint."""
    manifest = copy.deepcopy(manifest)
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[APPLIED_ANNOTATION] = canonical(applied)
    annotations[FINGERPRINT_ANNOTATION] = fingerprint_value
    if previous:
        annotations[PREVIOUS_ANNOTATION] = previous
    return manifest
