"""The Kubeflow Model Registry backend: the real ``model-registry`` client against the fake built from the spec."""

from __future__ import annotations

import json
import logging

import pytest

from components.find_baseline.baseline import fetch_baseline
from components.register.register import mark_production, register_model
from components.register.registry import Deployment, RegistryError, open_registry
from components.register.settings import CREDENTIALS_DIR_ENV, RegistrySettings
from tests.support.fake_model_registry import FakeModelRegistry, Spec
from tests.support.registry_models import evaluation, synthetic_model
from tests.support.registry_scenario import IMAGE_1, IMAGE_2, spec_properties, two_registrations

TOKEN = "eyJhbGciOiJSUzI1NiJ9.registry-token-for-tests.c2lnbmF0dXJl"


@pytest.fixture
def fake():
    with FakeModelRegistry(token=TOKEN) as server:
        yield server
        assert server.violations == []


@pytest.fixture
def settings(fake, tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text(TOKEN + "\n")
    monkeypatch.setenv("KFP_TORCH_REGISTRY", "kubeflow")
    monkeypatch.setenv("KFP_TORCH_REGISTRY_URL", fake.url)
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(secret))
    return RegistrySettings.from_environment()


def custom(entity: dict) -> dict:
    """Custom properties as plain values."""
    return {key: next(v for k, v in value.items() if k != "metadataType") for key, value in entity.items()}


@pytest.mark.slow  # the session's two real digits models
def test_two_registrations_end_to_end(fake, settings, tmp_path, kfp_minio, trained_models, digits_dir, digits_lineage):
    result = two_registrations(
        settings,
        tmp_path,
        "minio://mlpipeline/v2/artifacts/training",
        f"no version of image-classifier is deployed in the serving environment 'production' of the Kubeflow "
        f"Model Registry at {fake.url}: this first model is compared with nothing",
        trained_models,
        digits_dir,
    )
    first, second = result["version_1"], result["version_2"]
    assert (first.version, second.version) == ("run-1", "run-2")
    (model,) = fake.entities["registered_models"].values()
    assert model["name"] == "image-classifier" and model["state"] == "LIVE"
    version = fake.entities["model_versions"][first.version_id]
    properties = custom(version["customProperties"])
    weak = spec_properties(trained_models / "weak")
    assert properties["model_uri"] == first.model_uri
    assert properties["dataset_repository"] == weak["dataset_repository"] == digits_lineage["repo_url"]
    assert properties["dataset_commit"] == weak["dataset_commit"] == digits_lineage["commit"]
    assert json.loads(properties["dataset_md5"]) == digits_lineage["md5"]
    assert properties["metric.accuracy"] == result["evaluation_1"]["accuracy"] and properties["promote"] is True
    assert "metric.baseline_accuracy" not in properties  # the first model was compared with nothing
    assert properties["param.epochs"] == json.dumps(weak["parameters"]["epochs"])
    assert properties["param.learning_rate"] == json.dumps(weak["parameters"]["learning_rate"])
    assert (properties["pipeline_run_id"], properties["pipeline_run_name"]) == ("run-1", "training run 1")
    assert properties["image"] == IMAGE_1
    assert version["customProperties"]["metric.accuracy"]["metadataType"] == "MetadataDoubleValue"
    second_properties = custom(fake.entities["model_versions"][second.version_id]["customProperties"])
    assert second_properties["image"] == IMAGE_2
    assert second_properties["metric.accuracy"] == result["evaluation_2"]["accuracy"]
    assert second_properties["metric.baseline_accuracy"] == result["evaluation_1"]["accuracy"]
    assert second_properties["param.epochs"] == json.dumps(
        spec_properties(trained_models / "strong")["parameters"]["epochs"]
    )
    (artifact,) = fake.model_artifacts_of(first.version_id)
    assert artifact["uri"] == first.model_uri
    assert (artifact["modelSourceKind"], artifact["modelSourceClass"], artifact["modelSourceId"]) == (
        "kfp",
        "pipelinerun",
        "run-1",
    )
    (environment,) = fake.entities["serving_environments"].values()
    assert environment["name"] == "production"
    (service,) = fake.entities["inference_services"].values()
    assert service["registeredModelId"] == model["id"] and service["modelVersionId"] == second.version_id
    assert service["desiredState"] == "DEPLOYED" and service["runtime"] == "bentoml"
    assert custom(service["customProperties"]) == {"image": IMAGE_2}  # the first rollout's url and namespace went
    serves = sorted(fake.entities["serves"].values(), key=lambda serve: int(serve["id"]))
    assert [serve["modelVersionId"] for serve in serves] == [first.version_id, second.version_id]
    assert {serve["lastKnownState"] for serve in serves} == {"RUNNING"}


def test_a_retried_registration_finds_its_version(fake, settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    uri = "minio://mlpipeline/v2/artifacts/run-9/train/model"
    first = register_model(model, uri, evaluation(0.9), tmp_path / "a", "run-9", "", settings)
    again = register_model(model, uri, evaluation(0.9), tmp_path / "b", "run-9", "", settings)
    assert again == first
    assert len(fake.entities["model_versions"]) == 1 and len(fake.entities["model_artifacts"]) == 1
    with pytest.raises(RegistryError, match="already registers minio://mlpipeline/v2/artifacts/run-9/train/model"):
        register_model(model, uri + "-other", evaluation(0.9), tmp_path / "c", "run-9", "", settings)
    assert not (tmp_path / "c").exists()


def test_a_version_whose_artifact_was_never_written_is_completed(fake, settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    uri = "minio://mlpipeline/v2/artifacts/run-7/train/model"
    register_model(model, uri, evaluation(0.9), tmp_path / "a", "run-7", "", settings)
    fake.entities["model_artifacts"].clear()  # as if the first attempt died between version and artifact
    again = register_model(model, uri, evaluation(0.9), tmp_path / "b", "run-7", "", settings)
    assert again.model_uri == uri
    assert [artifact["uri"] for artifact in fake.model_artifacts_of(again.version_id)] == [uri]


def test_registration_json_holds_the_version_and_its_properties(settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    version = register_model(model, "gs://bucket/run/model", evaluation(0.9), tmp_path / "out", "run-3", "", settings)
    record = json.loads((tmp_path / "out" / "registration.json").read_text())
    assert {key: record[key] for key in version.metadata()} == version.metadata()
    assert record["properties"]["metric.accuracy"] == 0.9


def test_an_inference_service_of_another_model_is_not_taken_over(fake, settings, tmp_path, monkeypatch):
    model = synthetic_model(tmp_path / "model", "only")
    version = register_model(model, "gs://bucket/run/model", evaluation(0.9), tmp_path / "out", "run-4", "", settings)
    mark_production(version, Deployment(name="shared-name"), settings)
    monkeypatch.setenv("KFP_TORCH_REGISTRY_MODEL_NAME", "other-model")
    other_settings = RegistrySettings.from_environment()
    other = register_model(model, "gs://bucket/run/other", evaluation(0.9), tmp_path / "o", "run-5", "", other_settings)
    with pytest.raises(RegistryError, match="serves registered model"):
        mark_production(other, Deployment(name="shared-name"), other_settings)
    assert open_registry(settings).production() == version
    assert open_registry(other_settings).production() is None


def test_undeployed_services_are_not_production(fake, settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    version = register_model(model, "gs://bucket/run/model", evaluation(0.9), tmp_path / "out", "run-6", "", settings)
    mark_production(version, Deployment(name="image-classifier"), settings)
    (service,) = fake.entities["inference_services"].values()
    service["desiredState"] = "UNDEPLOYED"  # as Kubeflow's controller marks a deleted InferenceService
    assert open_registry(settings).production() is None
    metadata = fetch_baseline("production", tmp_path / "baseline", settings)
    assert metadata["baseline"] == "none" and "is deployed in the serving environment" in metadata["reason"]


def test_the_token_never_appears_in_errors_or_logs(fake, settings, tmp_path, caplog, monkeypatch):
    """A registry that refuses the token and quotes it back: the step's error and every log line mask it."""
    caplog.set_level(logging.DEBUG)
    fake.token = "another-token"
    fake.echo_authorization = True
    model = synthetic_model(tmp_path / "model", "only")
    with pytest.raises(RegistryError) as refused:
        register_model(model, "gs://bucket/run/model", evaluation(0.9), tmp_path / "out", "run-1", "", settings)
    message = str(refused.value)
    assert "401" in message and "Kubeflow Model Registry at" in message
    assert TOKEN not in message and "***" in message
    assert (
        refused.value.__cause__ is None
        and refused.value.__context__ is None
        or TOKEN not in repr(refused.value.__context__)
    )
    assert TOKEN not in caplog.text
    assert not (tmp_path / "out").exists()


def test_an_unreachable_registry_is_named(tmp_path):
    settings = RegistrySettings(registry="kubeflow", url="http://127.0.0.1:9")
    with pytest.raises(RegistryError, match=r"the Kubeflow Model Registry at http://127\.0\.0\.1:9: finding"):
        open_registry(settings).production()


def test_an_https_registry_without_a_token_is_refused_before_any_call(tmp_path, monkeypatch):
    monkeypatch.setattr("components.register.settings.SERVICE_ACCOUNT_TOKEN", tmp_path / "no-token")
    monkeypatch.delenv("KFP_TORCH_REGISTRY_TOKEN", raising=False)
    settings = RegistrySettings(registry="kubeflow", url="https://registry.example.com")
    with pytest.raises(RegistryError, match="only uses with a token"):
        open_registry(settings).production()


def test_the_fake_refuses_what_the_server_refuses(fake):
    """Undeclared paths, methods, fields and query parameters, and bodies the schema refuses."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    prefix = "/api/model_registry/v1alpha3"
    cases = [
        ("get", f"{prefix}/models", None, 404),
        ("delete", f"{prefix}/registered_models/1", None, 405),
        ("post", f"{prefix}/registered_models", {"name": "m", "stage": "Production"}, 400),
        ("post", f"{prefix}/registered_models", {"description": "no name"}, 400),
        ("get", f"{prefix}/registered_models?limit=3", None, 400),
        ("post", f"{prefix}/serving_environments", {"name": "e", "customProperties": {"k": {"string_value": 1}}}, 400),
        (
            "post",
            f"{prefix}/serving_environments",
            {"name": "e", "customProperties": {"k": {"metadataType": "MetadataIntValue", "int_value": "99999999999"}}},
            400,
        ),
        ("get", f"{prefix}/registered_models/abc", None, 400),
    ]
    for method, path, body, status in cases:
        raw = json.dumps(body).encode() if body is not None else b""
        got, answer = fake.handle(method, path, headers, raw)
        assert got == status, (method, path, body, answer)
        assert set(answer) == {"code", "message"}
    assert len(fake.violations) == len(cases) - 1  # 404 for an unknown path is not a client-body violation
    fake.violations.clear()
    status, created = fake.handle("post", f"{prefix}/registered_models", headers, b'{"name": "m"}')
    assert status == 201 and created["id"] == "1" and created["state"] == "LIVE"
    status, _ = fake.handle("post", f"{prefix}/registered_models", headers, b'{"name": "m"}')
    assert status == 409
    status, _ = fake.handle("get", f"{prefix}/model_version?name=v1", headers, b"")
    assert status == 400  # a version is found by name and parent, or by external id
    fake.violations.clear()


def test_the_fake_serves_the_spec_it_names():
    spec = Spec()
    assert spec.document["info"]["version"] == "v1alpha3"
    assert "/api/model_registry/v1alpha3/inference_services/{inferenceserviceId}/version" in spec.document["paths"]
