"""Two registrations end to end, the same on every registry: what the tests of each backend run.

A first model, with nothing in production yet, finds no baseline and says why; it is registered and marked
as serving in production (with its image); the second run's baseline is then the first model, fetched from
its registered URI; the second model is registered, marked in turn, and becomes the production version.
Model files live in the artifact store given by ``root`` (a ``minio://`` bucket in the tests), as a
cluster's pipeline root keeps them.
"""

from __future__ import annotations

from pathlib import Path

from components.common.storage import publish
from components.find_baseline.baseline import fetch_baseline
from components.register.register import mark_production, record_image, register_model
from components.register.registry import Deployment, open_registry
from components.register.settings import RegistrySettings
from tests.support.registry_models import evaluation, synthetic_model

IMAGE_1 = "registry.example.com/ml/image-classifier@sha256:" + "1" * 64
IMAGE_2 = "registry.example.com/ml/image-classifier@sha256:" + "2" * 64


def publish_model(work: Path, root: str, run: str, tag: str) -> tuple[Path, str]:
    """A synthetic Model directory, published under ``root`` as a run's train step would leave it."""
    directory = synthetic_model(work / run / "model", tag, commit=(tag.encode().hex() * 40)[:40])
    uri = f"{root}/{run}/train/model"
    publish(directory, uri)
    return directory, uri


def two_registrations(settings: RegistrySettings, work: Path, root: str, expected_first_reason: str) -> dict:
    """Run the scenario; returns what each step produced, for the backend's own assertions."""
    first_baseline = fetch_baseline("production", work / "run-1" / "baseline", settings)
    assert first_baseline["baseline"] == "none", first_baseline
    assert first_baseline["reason"] == expected_first_reason
    assert list((work / "run-1" / "baseline").iterdir()) == []

    model_1, uri_1 = publish_model(work, root, "run-1", "first")
    version_1 = register_model(
        model_1, uri_1, evaluation(0.90), work / "run-1" / "registered", "run-1", "training run 1", settings
    )
    assert version_1.model_uri == uri_1
    record_image(version_1.metadata(), IMAGE_1, settings)
    mark_production(
        version_1.metadata(),
        Deployment(name="image-classifier", url="http://image-classifier.serving:3000", image=IMAGE_1, namespace="ml"),
        settings,
    )
    assert open_registry(settings).production() == version_1

    second_baseline = fetch_baseline("production", work / "run-2" / "baseline", settings)
    baseline_dir = work / "run-2" / "baseline"
    assert second_baseline["baseline"] == "production"
    assert second_baseline["uri"] == uri_1
    assert second_baseline["version"] == version_1.version
    assert second_baseline["version_id"] == version_1.version_id
    assert second_baseline["model_name"] == settings.model_name
    assert second_baseline["registry"] == settings.registry
    assert (baseline_dir / "weights.pt").read_bytes() == b"weights of first"
    assert (baseline_dir / "model.onnx").read_bytes() == b"onnx of first"
    assert (baseline_dir / "spec.json").read_bytes() == (model_1 / "spec.json").read_bytes()

    model_2, uri_2 = publish_model(work, root, "run-2", "second")
    version_2 = register_model(
        model_2, uri_2, evaluation(0.95), work / "run-2" / "registered", "run-2", "training run 2", settings
    )
    assert version_2.version != version_1.version
    assert open_registry(settings).production() == version_1  # registered is not serving
    mark_production(version_2, Deployment(name="image-classifier", image=IMAGE_2), settings)
    assert open_registry(settings).production() == version_2
    return {"version_1": version_1, "version_2": version_2, "baseline": second_baseline}
