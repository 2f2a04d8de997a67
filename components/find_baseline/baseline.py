"""Find the model a candidate is compared with: the one in production, none, or one named by URI.

``fetch_baseline(baseline, output_dir)`` fills the ``Model`` directory ``evaluate`` takes as its
``baseline_model`` and returns that artifact's metadata. The contract:

- no baseline (``baseline="none"``, no registry, or no version in production yet): ``output_dir`` is an
  empty directory and the metadata is ``{"baseline": "none", "reason": "<why, in words>", ...}``;
- a baseline: ``output_dir`` holds its model files as ``train`` wrote them (``spec.json``, weights,
  ``model.onnx``), fetched from the registered URI (local path, ``gs://``, ``s3://``, ``minio://``), and the
  metadata is ``{"baseline": "production" | "uri", "reason": ..., "registry": ..., "registry_url": ...,
  "model_name": ..., "version": ..., "version_id": ..., "uri": ...}`` (registry fields empty for a URI).

Every metadata value is a string.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common.artifacts import atomic_directory
from components.common.spec import ModelFormatError, load_spec
from components.common.storage import StorageError, local_copy
from components.find_baseline.choices import NONE, PRODUCTION, URI, BaselineError, baseline_kind
from components.register.registry import RegisteredVersion, open_registry
from components.register.settings import RegistrySettings


def fetch_baseline(baseline: str, output_dir: str | Path, settings: RegistrySettings | None = None) -> dict[str, str]:
    """Fill ``output_dir`` as the module docstring says and return the artifact's metadata."""
    kind = baseline_kind(baseline)
    if kind == NONE:
        return _nothing(output_dir, "baseline=none: this model is compared with nothing", settings)
    if kind == URI:
        uri = baseline.strip()
        metadata = {
            "baseline": URI,
            "reason": f"compared with the model at {uri} (baseline given by URI)",
            "registry": "",
            "registry_url": "",
            "model_name": "",
            "version": "",
            "version_id": "",
            "uri": uri,
        }
        _fetch(uri, output_dir)
        return metadata
    registry = open_registry(settings)
    version = registry.production()
    if version is None:
        return _nothing(output_dir, registry.no_production_reason(), registry.settings)
    metadata = {
        "baseline": PRODUCTION,
        "reason": f"compared with {version.describe()}, in production",
        **_registry_fields(version),
        "uri": version.model_uri,
    }
    _fetch(version.model_uri, output_dir)
    return metadata


def _registry_fields(version: RegisteredVersion) -> dict[str, str]:
    return {
        "registry": version.registry,
        "registry_url": version.registry_url,
        "model_name": version.model_name,
        "version": version.version,
        "version_id": version.version_id,
    }


def _nothing(output_dir: str | Path, reason: str, settings: RegistrySettings | None) -> dict[str, str]:
    with atomic_directory(output_dir):
        pass  # an empty Model directory: evaluate compares with nothing
    metadata = {"baseline": NONE, "reason": reason}
    if settings is not None:
        metadata.update({"registry": settings.registry, "model_name": settings.model_name})
    return metadata


def _fetch(uri: str, output_dir: str | Path) -> None:
    """Copy the model directory at ``uri`` into ``output_dir``, which appears only when it is a readable model."""
    try:
        with local_copy(uri) as source, atomic_directory(output_dir) as staging:
            if not source.exists():
                raise BaselineError(f"baseline {uri}: no such directory")
            if not source.is_dir():
                raise BaselineError(f"baseline {uri} is a single file, not a model directory (spec.json, weights)")
            shutil.copytree(source, staging, dirs_exist_ok=True)
            load_spec(staging)
    except StorageError as error:
        raise BaselineError(f"cannot read the baseline model: {error}") from None
    except FileNotFoundError:
        raise BaselineError(f"baseline {uri}: no such directory") from None
    except ModelFormatError as error:
        raise BaselineError(f"baseline {uri} is not a model of this library: {error}") from None
