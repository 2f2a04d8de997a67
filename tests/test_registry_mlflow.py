"""The MLflow backend: MLflow's own client (mlflow-skinny) against a real ``mlflow server`` on 127.0.0.1
(SQLite store, basic authentication; see ``tests/support/mlflow_server.py``)."""

from __future__ import annotations

import json
import logging

import pytest

from components.register.register import mark_production, register_model
from components.register.registry import Deployment, RegistryError, open_registry
from components.register.settings import CREDENTIALS_DIR_ENV, RegistrySettings
from tests.support.mlflow_server import ADMIN, MlflowServer
from tests.support.registry_models import evaluation, synthetic_model
from tests.support.registry_scenario import IMAGE_1, IMAGE_2, spec_properties, two_registrations

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with MlflowServer() as running:
        yield running


@pytest.fixture
def settings(server, tmp_path, monkeypatch):
    """The step's environment: the server's address, a model name of its own, the Secret mounted as files."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text(ADMIN)
    (secret / "password").write_text(server.password)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("KFP_TORCH_REGISTRY", "mlflow")
    monkeypatch.setenv("KFP_TORCH_REGISTRY_URL", server.url)
    monkeypatch.setenv("KFP_TORCH_REGISTRY_MODEL_NAME", f"classifier-{tmp_path.name[-24:].strip('_')}")
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(secret))
    return RegistrySettings.from_environment()


def client(server):
    from mlflow import MlflowClient
    from mlflow.utils.rest_utils import MlflowHostCreds

    creds = MlflowHostCreds(server.url, username=ADMIN, password=server.password)
    from mlflow.store.model_registry.rest_store import RestStore

    return MlflowClient(tracking_uri=server.url, registry_uri=server.url), RestStore(lambda: creds)


def admin_environment(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)


def test_two_registrations_end_to_end(server, settings, tmp_path, kfp_minio, monkeypatch, trained_models, digits_dir):
    name = settings.model_name
    result = two_registrations(
        settings,
        tmp_path,
        "minio://mlpipeline/v2/artifacts/training",
        f"no version of {name} is in production in the MLflow registry at {server.url}: "
        "this first model is compared with nothing",
        trained_models,
        digits_dir,
    )
    first, second = result["version_1"], result["version_2"]
    evaluation_1, evaluation_2 = result["evaluation_1"], result["evaluation_2"]
    assert (first.version, second.version) == ("1", "2")
    assert (first.registry, first.registry_url, first.registered_model_id) == ("mlflow", server.url, name)
    admin_environment(server, monkeypatch)
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    version = mlflow.get_model_version(name, first.version)
    weak = spec_properties(trained_models / "weak")
    assert version.source == first.model_uri and version.run_id == first.run_id
    assert version.tags["dataset_commit"] == weak["dataset_commit"]
    assert version.tags["dataset_repository"] == weak["dataset_repository"]
    assert version.tags["dataset_md5"] == weak["dataset_md5"]
    assert version.tags["pipeline_run_id"] == "run-1"
    assert version.tags["metric.accuracy"] == str(evaluation_1["accuracy"])
    assert version.tags["image"] == IMAGE_1 and version.tags["deployment"] == "image-classifier"
    assert version.tags["deployment_url"] == "http://image-classifier.serving:3000"
    assert mlflow.get_model_version(name, "2").tags["image"] == IMAGE_2
    assert mlflow.get_registered_model(name).aliases == {"production": "2"}
    run = mlflow.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "training run 1"
    assert run.data.metrics["accuracy"] == evaluation_1["accuracy"]
    recalls = {name: value for name, value in evaluation_1.items() if name.startswith("recall_")}
    assert len(recalls) == 10 and {name: run.data.metrics[name] for name in recalls} == recalls
    assert "baseline_accuracy" not in run.data.metrics  # the first model was compared with nothing
    assert run.data.params["epochs"] == json.dumps(weak["parameters"]["epochs"])
    assert run.data.params["architecture"] == json.dumps(weak["parameters"]["architecture"])
    assert run.data.tags["pipeline_run_id"] == "run-1"
    assert mlflow.get_experiment(run.info.experiment_id).name == "kfp-torch-lifecycle"
    second_run = mlflow.get_run(second.run_id).data
    assert second_run.metrics["accuracy"] == evaluation_2["accuracy"]
    assert second_run.metrics["baseline_accuracy"] == evaluation_1["accuracy"]
    assert second_run.params["epochs"] == json.dumps(spec_properties(trained_models / "strong")["parameters"]["epochs"])


def test_a_retried_registration_finds_its_version(server, settings, tmp_path, monkeypatch):
    model = synthetic_model(tmp_path / "model", "only")
    uri = "s3://models/run-9/train/model"
    first = register_model(model, uri, evaluation(0.9), tmp_path / "a", "run-9", "", settings)
    again = register_model(model, uri, evaluation(0.9), tmp_path / "b", "run-9", "", settings)
    assert again == first
    admin_environment(server, monkeypatch)
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri=server.url).search_model_versions(f"name='{settings.model_name}'")
    assert [item.version for item in found] == ["1"]


def test_a_local_model_path_is_refused_with_the_reason(settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    with pytest.raises(RegistryError, match="refuses a local path as a model version's source"):
        register_model(model, str(model), evaluation(0.9), tmp_path / "out", "run-1", "", settings)
    assert not (tmp_path / "out").exists()


def test_no_production_before_a_rollout(settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    registry = open_registry(settings)
    assert registry.production() is None  # no registered model at all
    register_model(model, "gs://models/run-1/model", evaluation(0.9), tmp_path / "out", "run-1", "", settings)
    assert registry.production() is None  # registered, never marked


def test_metric_names_mlflow_refuses_are_kept_readable(server, settings, tmp_path, monkeypatch):
    model = synthetic_model(tmp_path / "model", "only")
    scores = {**evaluation(0.9), "recall_crème (brûlée)": 0.5}
    version = register_model(model, "gs://models/run-1/model", scores, tmp_path / "out", "run-1", "", settings)
    admin_environment(server, monkeypatch)
    from mlflow import MlflowClient

    metrics = MlflowClient(tracking_uri=server.url).get_run(version.run_id).data.metrics
    assert metrics["recall_crème _brûlée_"] == 0.5


def test_wrong_credentials_are_refused_and_never_shown(server, settings, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "secret"
    (secret / "password").write_text("wrong-Passw0rd-for-the-test")
    model = synthetic_model(tmp_path / "model", "only")
    with pytest.raises(RegistryError) as refused:
        register_model(model, "gs://models/run-1/model", evaluation(0.9), tmp_path / "out", "run-1", "", settings)
    message = str(refused.value)
    assert f"the MLflow registry at {server.url}: registering" in message and "401" in message
    assert "wrong-Passw0rd-for-the-test" not in message and server.password not in message
    assert "wrong-Passw0rd-for-the-test" not in caplog.text
    assert not (tmp_path / "out").exists()


def test_no_credentials_at_all_is_a_401_named(server, settings, tmp_path, monkeypatch):
    monkeypatch.delenv(CREDENTIALS_DIR_ENV)
    with pytest.raises(RegistryError, match="401|Unauthorized|credentials"):
        open_registry(RegistrySettings.from_environment()).production()


def test_a_token_from_the_environment_is_masked_in_errors(server, settings, tmp_path, monkeypatch, caplog):
    """MLflow's basic-auth app refuses a bearer token; the error must not carry it."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv(CREDENTIALS_DIR_ENV)
    monkeypatch.setenv("KFP_TORCH_REGISTRY_TOKEN", "tok-0123456789-abcdef")
    with pytest.raises(RegistryError) as refused:
        open_registry(RegistrySettings.from_environment()).production()
    assert "tok-0123456789-abcdef" not in str(refused.value)
    assert "tok-0123456789-abcdef" not in caplog.text


def test_marking_a_version_of_another_registry_is_refused(settings, tmp_path):
    model = synthetic_model(tmp_path / "model", "only")
    version = register_model(model, "gs://models/run-1/model", evaluation(0.9), tmp_path / "out", "run-1", "", settings)
    elsewhere = {**version.metadata(), "registry_url": "http://mlflow.elsewhere:5000"}
    with pytest.raises(RegistryError, match="is not a version in the MLflow registry"):
        mark_production(elsewhere, Deployment(name="image-classifier"), settings)
    with pytest.raises(RegistryError, match="not named by digest"):
        mark_production(version, Deployment(name="image-classifier", image="registry.example.com/ml:latest"), settings)
    assert open_registry(settings).production() is None
