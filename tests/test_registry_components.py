"""The register and find_baseline components under kfp.local, with the registry in the step's environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import local

from components.register.register import mark_production
from components.register.registry import Deployment, RegisteredVersion
from components.register.settings import RegistrySettings
from tests.support.fake_model_registry import FakeModelRegistry
from tests.support.registry_models import synthetic_model
from tests.support.registry_pipeline import EVALUATION, register_then_find_baseline

pytestmark = pytest.mark.slow


@pytest.fixture
def kfp_local(tmp_path):
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


def outputs(root: Path, task: str) -> dict:
    latest = max(root.glob("register-then-find-baseline-*"), key=lambda path: path.stat().st_mtime)
    return json.loads((latest / task / "executor_output.json").read_text())["artifacts"]


def test_without_a_registry_the_step_writes_promotion_json(kfp_local, tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_TORCH_REGISTRY", raising=False)
    model = synthetic_model(tmp_path / "model", "local")
    register_then_find_baseline(model_uri=str(model), baseline="production")
    (registered,) = outputs(kfp_local, "register")["registered"]["artifacts"]
    record = json.loads((Path(registered["uri"]) / "promotion.json").read_text())
    assert record["model_uri"] == str(model) and record["evaluation"] == EVALUATION
    assert registered["metadata"]["registry"] == "none"
    assert registered["metadata"]["promoted_at"] == record["promoted_at"]
    (baseline,) = outputs(kfp_local, "find-baseline")["baseline_model"]["artifacts"]
    assert baseline["metadata"]["baseline"] == "none" and "no model registry is set" in baseline["metadata"]["reason"]
    assert not any(Path(baseline["uri"]).iterdir())


def test_with_the_kubeflow_registry_the_second_run_finds_the_first(kfp_local, tmp_path, monkeypatch):
    with FakeModelRegistry() as fake:
        monkeypatch.setenv("KFP_TORCH_REGISTRY", "kubeflow")
        monkeypatch.setenv("KFP_TORCH_REGISTRY_URL", fake.url)
        first = synthetic_model(tmp_path / "first", "first")
        register_then_find_baseline(model_uri=str(first), baseline="production")
        (registered,) = outputs(kfp_local, "register")["registered"]["artifacts"]
        version = RegisteredVersion.from_metadata(registered["metadata"])
        assert version.registry == "kubeflow" and version.model_uri == str(first)
        assert version.version and not version.version.startswith("{{")  # the run's id, substituted
        (stored,) = fake.entities["model_versions"].values()
        assert stored["name"] == version.version
        assert stored["customProperties"]["pipeline_run_name"]["string_value"].startswith("register-then-find-baseline")
        (baseline,) = outputs(kfp_local, "find-baseline")["baseline_model"]["artifacts"]
        assert baseline["metadata"]["baseline"] == "none"

        mark_production(
            registered["metadata"], Deployment(name="image-classifier"), RegistrySettings.from_environment()
        )
        second = synthetic_model(tmp_path / "second", "second")
        register_then_find_baseline(model_uri=str(second), baseline="production")
        (baseline,) = outputs(kfp_local, "find-baseline")["baseline_model"]["artifacts"]
        assert baseline["metadata"]["baseline"] == "production"
        assert baseline["metadata"]["version"] == version.version and baseline["metadata"]["uri"] == str(first)
        assert (Path(baseline["uri"]) / "weights.pt").read_bytes() == b"weights of first"
        assert fake.violations == []


def test_a_bad_baseline_fails_the_step_naming_the_choices(kfp_local, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("KFP_TORCH_REGISTRY", raising=False)
    model = synthetic_model(tmp_path / "model", "local")
    with pytest.raises(RuntimeError):
        register_then_find_baseline(model_uri=str(model), baseline="latest")
    assert "baseline='latest': give 'production'" in capfd.readouterr().out
