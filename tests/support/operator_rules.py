"""The Training Operator's admission rules for a PyTorchJob (its validating webhook, kubeflow/trainer
release-1.9 ``pkg/webhooks/pytorch/pytorchjob_webhook.go``), which the CRD schema alone does not express."""

from __future__ import annotations

import re
from typing import Any

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
