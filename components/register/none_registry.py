"""No registry: the promotion is recorded as ``promotion.json`` beside the run's other artifacts.

For clusters with neither registry. The record says which model passed the gate, trained on which data,
with which scores, promoted when; nothing reads it back, so nothing knows what serves, and a
``production`` baseline is compared with nothing.
"""

from __future__ import annotations

import logging

from components.common.artifacts import atomic_directory, write_json_atomic
from components.register.registration import Registration
from components.register.registry import Deployment, RegisteredVersion, Registry, check_image

RECORD_FILE = "promotion.json"
log = logging.getLogger(__name__)


def promotion_record(registration: Registration) -> dict:
    """What ``promotion.json`` holds."""
    return {
        "promoted_at": registration.registered_at,
        "model_uri": registration.model_uri,
        "architecture": registration.architecture,
        "classes": registration.classes,
        "dataset": registration.dataset,
        "library_version": registration.library_version,
        "evaluation": dict(registration.evaluation),
    }


class NoRegistry(Registry):
    name = "none"

    def describe(self) -> str:
        return "no model registry (KFP_TORCH_REGISTRY=none)"

    def register(self, registration: Registration, output_dir: str) -> RegisteredVersion:
        with atomic_directory(output_dir) as staging:
            write_json_atomic(staging / RECORD_FILE, promotion_record(registration))
        return RegisteredVersion(
            registry=self.name,
            registry_url="",
            model_name=self.settings.model_name,
            version="",
            version_id="",
            model_uri=registration.model_uri,
        )

    def production(self) -> RegisteredVersion | None:
        return None

    def no_production_reason(self) -> str:
        return (
            "no model registry is set (KFP_TORCH_REGISTRY=none), so nothing records which model is in production: "
            "this model is compared with nothing"
        )

    def mark_serving(self, version: RegisteredVersion, deployment: Deployment) -> None:
        if deployment.image:
            check_image(deployment.image)
        log.info("no model registry: %s serves as %s, recorded nowhere", version.model_uri, deployment.name)

    def record_image(self, version: RegisteredVersion, image: str) -> None:
        check_image(image)
        log.info("no model registry: image %s of %s recorded nowhere", image, version.model_uri)
