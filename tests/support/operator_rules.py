"""What a PyTorchJob must pass before the Training Operator runs it: the CRD's schema, strictly
(unknown fields rejected, where the API server would silently prune them), and the operator's
admission rules (its validating webhook, kubeflow/trainer release-1.9
``pkg/webhooks/pytorch/pytorchjob_webhook.go``), which the schema alone does not express."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD = Path(__file__).resolve().parents[3] / "shared/reference/crds/kubeflow.org_pytorchjobs.yaml"

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
REPLICA_TYPES = ("Master", "Worker")
DEFAULT_CONTAINER = "pytorch"


def webhook_violations(manifest: dict[str, Any]) -> list[str]:
    problems = []
    name = manifest["metadata"]["name"]
    if len(name) > 63 or not DNS_1035_LABEL.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = manifest["spec"]
    if (spec.get("elasticPolicy") or {}).get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
        problems.append("spec.elasticPolicy.nProcPerNode must not be used with spec.nprocPerNode")
    replicas = spec.get("pytorchReplicaSpecs")
    if not replicas:
        problems.append("spec.pytorchReplicaSpecs must be required")
    for kind, replica in (replicas or {}).items():
        if kind not in REPLICA_TYPES:
            problems.append(f"replica type {kind} is not one of {REPLICA_TYPES}")
        containers = (replica or {}).get("template", {}).get("spec", {}).get("containers") or []
        if not containers:
            problems.append(f"{kind}: containers must be specified")
        if any(not c.get("image") for c in containers):
            problems.append(f"{kind}: every container needs an image")
        if not any(c.get("name") == DEFAULT_CONTAINER for c in containers):
            problems.append(f"{kind}: must have at least one container with name {DEFAULT_CONTAINER}")
        if kind == "Master" and replica.get("replicas") != 1:
            problems.append("Master replicas must be 1")
    return problems


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with unknown fields rejected (the API server would silently prune them)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_validator() -> jsonschema.Draft7Validator:
    """The PyTorchJob v1 schema of the reference CRD, strict."""
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
