"""Registry settings and credentials, what a registration carries, the ``none`` registry, and the baseline contract."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from components.find_baseline.baseline import BaselineError, baseline_kind, fetch_baseline
from components.register.register import mark_production, record_image, register_model
from components.register.registration import PipelineRun, Registration
from components.register.registry import Deployment, RegisteredVersion, RegistryError
from components.register.settings import (
    CREDENTIALS_DIR_ENV,
    DEFAULT_KUBEFLOW_URL,
    RegistrySettings,
    RegistrySettingsError,
)
from tests.support.registry_models import evaluation, synthetic_model

NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.timezone.utc)


# --- settings and credentials -----------------------------------------------------------------------------


def test_settings_from_the_environment():
    settings = RegistrySettings.from_environment({})
    assert (settings.registry, settings.model_name) == ("none", "image-classifier")
    kubeflow = RegistrySettings.from_environment({"KFP_TORCH_REGISTRY": "kubeflow"})
    assert kubeflow.url == DEFAULT_KUBEFLOW_URL and kubeflow.serving_environment == "production"
    mlflow = RegistrySettings.from_environment(
        {"KFP_TORCH_REGISTRY": "mlflow", "KFP_TORCH_REGISTRY_URL": "http://mlflow.mlflow:5000/"}
    )
    assert mlflow.url == "http://mlflow.mlflow:5000"
    assert RegistrySettings.from_environment(mlflow.environment()) == mlflow  # what the pipelines set round-trips


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"KFP_TORCH_REGISTRY": "wandb"}, "KFP_TORCH_REGISTRY='wandb': use one of none, mlflow, kubeflow"),
        ({"KFP_TORCH_REGISTRY": "mlflow"}, "needs KFP_TORCH_REGISTRY_URL"),
        ({"KFP_TORCH_REGISTRY": "mlflow", "KFP_TORCH_REGISTRY_URL": "mlflow:5000"}, "http:// or https://"),
        ({"KFP_TORCH_REGISTRY_MODEL_NAME": "my model/v1"}, "a registered model's name is"),
        ({"KFP_TORCH_REGISTRY": "kubeflow", "KFP_TORCH_REGISTRY_CA_FILE": "/nowhere/ca.pem"}, "no such file"),
    ],
)
def test_bad_settings_are_named(environment, message):
    with pytest.raises(RegistrySettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RegistrySettings.from_environment(environment)


def test_a_password_in_the_url_is_refused_without_showing_it():
    with pytest.raises(RegistrySettingsError) as refused:
        RegistrySettings.from_environment(
            {"KFP_TORCH_REGISTRY": "mlflow", "KFP_TORCH_REGISTRY_URL": "http://admin:hunter2-secret@mlflow:5000"}
        )
    assert "hunter2-secret" not in str(refused.value) and "never in the URL" in str(refused.value)


def test_credentials_from_a_mounted_secret_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr("components.register.settings.SERVICE_ACCOUNT_TOKEN", tmp_path / "no-sa-token")
    secret = tmp_path / "secret"
    secret.mkdir()
    settings = RegistrySettings(registry="mlflow", url="http://mlflow:5000", credentials_dir=str(secret))
    assert not settings.credentials({})  # mounted optionally: an empty directory means none
    assert settings.credentials({"KFP_TORCH_REGISTRY_TOKEN": "from-env"}).token == "from-env"
    (secret / "username").write_text("ci\n")
    with pytest.raises(RegistrySettingsError, match="no 'password'"):
        settings.credentials({})
    (secret / "password").write_text("pa55word\n")
    found = settings.credentials({"KFP_TORCH_REGISTRY_TOKEN": "from-env"})
    assert (found.username, found.password, found.token) == ("ci", "pa55word", "")
    assert "pa55word" not in repr(found) and found.secrets == {"pa55word"}
    (secret / "token").write_text("tok\n")
    assert settings.credentials({}).token == "tok"
    (secret / "token").write_text("")
    with pytest.raises(RegistrySettingsError, match="is empty"):
        settings.credentials({})


def test_kubeflow_falls_back_to_the_service_account_token(tmp_path, monkeypatch):
    token = tmp_path / "sa-token"
    token.write_text("service-account-jwt\n")
    monkeypatch.setattr("components.register.settings.SERVICE_ACCOUNT_TOKEN", token)
    assert RegistrySettings(registry="kubeflow", url="http://r:8080").credentials({}).token == "service-account-jwt"
    assert not RegistrySettings(registry="mlflow", url="http://m:5000").credentials({})


# --- a registration --------------------------------------------------------------------------------------


def test_a_registration_carries_the_lineage_scores_parameters_and_run(tmp_path):
    model = synthetic_model(tmp_path / "model", "m", commit="a" * 40, epochs=7)
    registration = Registration.collect(
        model, "gs://b/run/model", evaluation(0.875), PipelineRun.of("uuid-1", "{{$.pipeline_job_name}}"), NOW
    )
    properties = registration.properties()
    assert properties["model_uri"] == "gs://b/run/model"
    assert properties["dataset_repository"] == "https://github.com/example/food-data.git"
    assert properties["dataset_commit"] == "a" * 40
    assert json.loads(properties["dataset_md5"]) == {"data/raw": "5f0f1b1ad1e7a1de5f3c5e3ee1a3c1d2.dir"}
    assert properties["metric.accuracy"] == 0.875 and properties["metric.test_samples"] == 120.0
    assert "metric.display_name" not in properties and "metric.promote" not in properties
    assert properties["promote"] is True and properties["promotion_reason"].startswith("accuracy 0.8750")
    assert properties["param.epochs"] == "7" and properties["param.architecture"] == '"small_cnn"'
    assert properties["pipeline_run_id"] == "uuid-1"
    assert properties["pipeline_run_name"] == ""  # a placeholder no runner substituted is not a name
    assert properties["registered_at"] == "2026-06-01T03:00:00+00:00"
    assert registration.description() == "small_cnn trained on aaaaaaaaaaaa in run uuid-1: test accuracy 0.8750"


def test_a_directory_that_is_no_model_is_refused_before_any_registry_call(tmp_path):
    with pytest.raises(ValueError, match="spec.json not found"):
        register_model(tmp_path, "gs://b/run/model", evaluation(0.9), tmp_path / "out", settings=RegistrySettings())
    assert not (tmp_path / "out").exists()


# --- no registry -------------------------------------------------------------------------------------------


def test_without_a_registry_register_writes_the_promotion_record(tmp_path):
    model = synthetic_model(tmp_path / "model", "m")
    scores = evaluation(0.9)
    version = register_model(
        model, "minio://b/run/model", scores, tmp_path / "new", "run-1", "", RegistrySettings(), NOW
    )
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["promotion.json"]
    spec = json.loads((model / "spec.json").read_text())
    assert json.loads((tmp_path / "new" / "promotion.json").read_text()) == {
        "promoted_at": "2026-06-01T03:00:00+00:00",
        "model_uri": "minio://b/run/model",
        "architecture": spec["architecture"],
        "classes": spec["classes"],
        "dataset": spec["dataset"],
        "library_version": spec["versions"]["library"],
        "evaluation": {k: v for k, v in scores.items() if k != "display_name"},
    }
    assert version == RegisteredVersion("none", "", "image-classifier", "", "", "minio://b/run/model")


def test_without_a_registry_production_is_none_and_says_why(tmp_path):
    metadata = fetch_baseline("production", tmp_path / "baseline", RegistrySettings())
    assert metadata == {
        "baseline": "none",
        "reason": "no model registry is set (KFP_TORCH_REGISTRY=none), so nothing records which model is in "
        "production: this model is compared with nothing",
        "registry": "none",
        "model_name": "image-classifier",
    }
    assert (tmp_path / "baseline").is_dir() and not any((tmp_path / "baseline").iterdir())


def test_without_a_registry_marking_production_records_nothing_but_checks_the_image(tmp_path):
    version = RegisteredVersion("none", "", "image-classifier", "", "", "gs://b/m")
    mark_production(version.metadata(), Deployment(name="svc"), RegistrySettings())
    with pytest.raises(RegistryError, match="not named by digest"):
        record_image(version, "registry.example.com/ml/image:latest", RegistrySettings())


def test_a_version_from_another_registry_is_refused():
    version = RegisteredVersion("mlflow", "http://m:5000", "image-classifier", "1", "1", "gs://b/m")
    with pytest.raises(RegistryError, match="KFP_TORCH_REGISTRY is 'none'"):
        mark_production(version, Deployment(name="svc"), RegistrySettings())
    with pytest.raises(RegistryError, match="no registry, model_name, version"):
        RegisteredVersion.from_metadata({"display_name": "registered"})


# --- the baseline --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, kind",
    [
        ("production", "production"),
        ("none", "none"),
        ("gs://b/m", "uri"),
        ("minio://mlpipeline/v2/artifacts/p/r/train/model", "uri"),
        ("s3://b/m", "uri"),
        ("file:///models/m", "uri"),
        ("/models/m", "uri"),
    ],
)
def test_baseline_kinds(value, kind):
    assert baseline_kind(value) == kind


@pytest.mark.parametrize("value", ["", "prod", "Production", "latest", "models:/m/1", "https://x/m", "relative/dir"])
def test_other_baselines_are_refused_with_the_choices(value):
    with pytest.raises(BaselineError, match="give 'production'.*'none', or a model's URI"):
        baseline_kind(value)


def test_baseline_none_is_an_empty_model_with_the_reason(tmp_path):
    metadata = fetch_baseline("none", tmp_path / "b")
    assert metadata == {"baseline": "none", "reason": "baseline=none: this model is compared with nothing"}
    assert list((tmp_path / "b").iterdir()) == []


def test_a_baseline_by_uri_is_fetched(tmp_path, kfp_minio):
    from components.common.storage import publish

    model = synthetic_model(tmp_path / "model", "by-uri")
    publish(model, "minio://mlpipeline/models/by-uri")
    metadata = fetch_baseline("minio://mlpipeline/models/by-uri", tmp_path / "b")
    assert metadata["baseline"] == "uri" and metadata["uri"] == "minio://mlpipeline/models/by-uri"
    assert (tmp_path / "b" / "weights.pt").read_bytes() == b"weights of by-uri"
    local = fetch_baseline(str(model), tmp_path / "c")
    assert local["baseline"] == "uri" and (tmp_path / "c" / "model.onnx").read_bytes() == b"onnx of by-uri"


@pytest.mark.parametrize(
    "make, message", [("missing", "no such directory"), ("file", "single file"), ("empty", "not a model")]
)
def test_a_baseline_that_is_no_model_fails_and_leaves_nothing(tmp_path, make, message):
    target = tmp_path / "source"
    if make == "file":
        target.write_text("x")
    elif make == "empty":
        target.mkdir()
    with pytest.raises(BaselineError, match=message):
        fetch_baseline(str(target), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_every_component_input_is_described():
    """KFP compiles each input's description from the docstring's Args section; the Kubeflow UI shows it."""
    from components.find_baseline.component import find_baseline as find_baseline_component
    from components.register.component import register as register_component

    inputs = {
        component.name: {name: spec.description for name, spec in component.component_spec.inputs.items()}
        for component in (register_component, find_baseline_component)
    }
    assert set(inputs["register"]) == {"model", "evaluation", "pipeline_run_id", "pipeline_run_name"}
    assert set(inputs["find-baseline"]) == {"baseline"}
    assert all(description and description.strip() for each in inputs.values() for description in each.values())


def test_the_environment_variables_named_in_the_readme_are_the_settings_own():
    from pathlib import Path

    from components.register import settings

    readme = (Path(settings.__file__).parent / "README.md").read_text()
    names = [value for key, value in vars(settings).items() if key.endswith("_ENV")]
    assert names and all(f"`{name}`" in readme for name in names), names
    assert CREDENTIALS_DIR_ENV in readme
