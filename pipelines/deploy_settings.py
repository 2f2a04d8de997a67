"""The deploy step's cluster settings: what the serving pods get on this cluster, fixed at compile time.

The ``deploy:`` mapping of a cluster settings file (``kfp-torch compile --settings FILE``, documented in
``pipelines/cluster_settings.example.yaml``): the ServiceAccount the serving pods run as, the NAMES of the Secrets
they pull the image with (never their content), the cluster's KServe release and deployment mode, the serving
capacity (replicas, the autoscaler's metric and target, each replica's requests and limits), how many held-out
images verify a deployment and how long a rollout may take. They become the deploy task's arguments in the
compiled YAML; what changes from run to run (the target and the namespace) are pipeline parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components.deploy.target import DeployRequest


class DeploySettingsError(ValueError):
    """A deploy setting that could not make a valid deployment; the message names it."""


@dataclass(frozen=True)
class DeploySettings:
    service_account: str = ""  # "" for the namespace's default ServiceAccount
    image_pull_secrets: tuple[str, ...] = ()  # Secret names in the serving namespace
    kserve_version: str = "0.20"  # the cluster's KServe release: 0.17 renamed the deployment modes
    kserve_mode: str = "standard"  # standard (RawDeployment) or knative (Serverless)
    min_replicas: int = 1
    max_replicas: int = 3
    scale_metric: str = "cpu"  # cpu or memory (deployment, KServe standard); concurrency or rps (KServe knative)
    scale_target: int = 80
    cpu: str = "500m"  # each replica's requests and limits
    memory: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    verify_images: int = 64  # held-out test images sent to each new revision
    deadline_seconds: int = 600  # for the rollout, and afresh for a rollback

    @classmethod
    def from_dict(cls, data: Any) -> DeploySettings:
        if not isinstance(data, dict):
            raise DeploySettingsError(f"deploy must be a mapping of deploy settings, got {type(data).__name__}")
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DeploySettingsError(
                f"deploy: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        secrets = data.get("image_pull_secrets", ())
        if isinstance(secrets, str) or not isinstance(secrets, (list, tuple)):
            raise DeploySettingsError(
                f"deploy.image_pull_secrets is a list of Secret names, got {type(secrets).__name__}"
            )
        return cls(**{**data, "image_pull_secrets": tuple(secrets)})

    def arguments(self) -> dict[str, Any]:
        """The deploy component's arguments these settings give."""
        return {**dataclasses.asdict(self), "image_pull_secrets": list(self.image_pull_secrets)}

    def validate(self) -> None:
        """The checks the deploy step makes, made now: each problem names the setting and what would be valid."""
        problems = []
        for name in ("verify_images", "deadline_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        capacity = {
            name: value
            for name, value in dataclasses.asdict(self).items()
            if name not in ("verify_images", "deadline_seconds")
        }
        capacity["image_pull_secrets"] = self.image_pull_secrets
        probe = DeployRequest(
            target="kserve",
            name="settings-check",
            namespace="settings-check",
            image=f"registry.example/settings-check@sha256:{'0' * 64}",
            **capacity,
        )
        problems += probe.problems()
        if problems:
            raise DeploySettingsError("deploy: " + "; ".join(problems))
