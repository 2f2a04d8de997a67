"""Register a promoted model, and record later what it became: the image it runs in, the service that serves it.

``register_model`` is the ``register`` step's logic: it collects a :class:`Registration` from the Model directory,
its URI, evaluate's metrics and the pipeline run, and registers it with the registry the step's
environment names (``components.register.settings``). What it returns, a :class:`RegisteredVersion`, goes
into the step's output artifact's metadata.

``mark_production`` and ``record_image`` are what the ``deploy`` and ``containerize`` steps call with that
metadata: the first after a verified rollout (MLflow: alias ``production``; Kubeflow: a deployed
InferenceService in the production serving environment), the second once the serving image is pushed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.register.registration import PipelineRun, Registration
from components.register.registry import Deployment, RegisteredVersion, RegistryError, open_registry
from components.register.settings import RegistrySettings

log = logging.getLogger(__name__)


def register_model(
    model_dir: str | Path,
    model_uri: str,
    evaluation: Mapping[str, Any],
    output_dir: str | Path,
    run_id: str = "",
    run_name: str = "",
    settings: RegistrySettings | None = None,
    now: dt.datetime | None = None,
) -> RegisteredVersion:
    """Register the model at ``model_dir`` (published at ``model_uri``) with its evaluation; the registry's
    record of it (``promotion.json`` without a registry, ``registration.json`` with one) goes to ``output_dir``."""
    registration = Registration.collect(model_dir, model_uri, evaluation, PipelineRun.of(run_id, run_name), now)
    registry = open_registry(settings)
    registered = registry.register(registration, str(output_dir))
    log.info("registered %s: %s", registration.model_uri, registered.describe())
    return registered


def mark_production(
    registered: RegisteredVersion | Mapping[str, Any],
    deployment: Deployment,
    settings: RegistrySettings | None = None,
) -> RegisteredVersion:
    """Record that the version ``registered`` names (the register step's artifact metadata) serves in
    production through ``deployment``, with its image; call it after the rollout is verified."""
    version = _version(registered)
    registry = open_registry(settings)
    _same_registry(version, registry.settings)
    registry.mark_serving(version, deployment)
    log.info("%s now serves in production through %s", version.describe(), deployment.name)
    return version


def record_image(
    registered: RegisteredVersion | Mapping[str, Any], image: str, settings: RegistrySettings | None = None
) -> RegisteredVersion:
    """Record the serving image (``repository@sha256:...``) on the version ``registered`` names."""
    version = _version(registered)
    registry = open_registry(settings)
    _same_registry(version, registry.settings)
    registry.record_image(version, image)
    return version


def _version(registered: RegisteredVersion | Mapping[str, Any]) -> RegisteredVersion:
    return registered if isinstance(registered, RegisteredVersion) else RegisteredVersion.from_metadata(registered)


def _same_registry(version: RegisteredVersion, settings: RegistrySettings) -> None:
    if version.registry != settings.registry:
        raise RegistryError(
            f"{version.describe()} was registered with registry {version.registry!r}, but this step's "
            f"KFP_TORCH_REGISTRY is {settings.registry!r}: set the same registry on both steps"
        )
