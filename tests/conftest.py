"""Shared fixtures: the real digits under DVC with a local remote, a fake GCS server and an S3 server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.common.storage import S3_CREDENTIALS_DIR_ENV, S3_ENDPOINT_ENV
from pipelines.demo_data import DemoRepo, prepare_digits_repo
from tests.support.fake_gcs import FakeGcs
from tests.support.mlflow_server import MlflowServer, mlflow_server_venv
from tests.support.once_per_run import made_once
from tests.support.s3_server import S3Server, mount_secret

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")  # BentoML's usage analytics
# One intra-op thread per process (set before torch is first imported; subprocesses inherit it): `make test`
# runs three workers on two cores, each starting training and serving processes, and two threads each would
# spin-wait for one another (OpenMP) on CPUs that are already taken. The notebooks keep their pinned two.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# The files that take a minute or more, longest first: `make test` runs files on several workers (pytest-xdist,
# --dist loadfile), and a long file started last would leave one worker busy while the others sit idle.
LONGEST_FIRST = (
    "test_containerize.py",
    "test_readme_own_images.py",
    "test_notebooks.py",
    "test_components_local.py",
    "test_train.py",
    "test_deploy_local.py",
    "test_registry_mlflow.py",  # after a few minutes: its server's venv is made in the background meanwhile
    "test_pytorchjob_step.py",
    "test_dvc_pull_fast_path.py",
    "test_models.py",
    "test_deploy_local_target.py",
    "test_trainjob_step.py",
    "test_pytorchjob_custom_command.py",
    "test_storage.py",
    "test_serving.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
    if any(getattr(getattr(item, "module", None), "MlflowServer", None) is MlflowServer for item in items):
        mlflow_server_venv.start()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    mlflow_server_venv.wait()


@pytest.fixture(autouse=True, scope="session")
def bentoml_home(tmp_path_factory):
    """Bentos and BentoML models built by tests go to a throwaway store, never ~/bentoml."""
    home = tmp_path_factory.mktemp("bentoml-home")
    os.environ["BENTOML_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def digits_repo(tmp_path_factory) -> DemoRepo:
    """The 1,797 digits as PNGs in ``data/raw`` of a git repo, tracked by DVC, pushed to a local remote."""

    def prepare(directory: Path) -> dict:
        repo = prepare_digits_repo(directory)
        return {
            "repo_url": repo.repo_url,
            "remote_dir": str(repo.remote_dir),
            "data_path": repo.data_path,
            "commit": repo.commit,
        }

    made = made_once(tmp_path_factory, "digits-repo", prepare)
    return DemoRepo(**{**made, "remote_dir": Path(made["remote_dir"])})


@pytest.fixture(scope="session")
def digits_dir(digits_repo) -> Path:
    """The digits dataset directory itself (labels.csv, classes.txt, images/)."""
    return Path(digits_repo.repo_url) / digits_repo.data_path


@pytest.fixture(scope="session")
def digits_lineage(digits_repo) -> dict:
    """The dataset lineage dvc_pull records for the digits (repository, commit, DVC md5 of the path)."""
    tracked = yaml.safe_load((Path(digits_repo.repo_url) / f"{digits_repo.data_path}.dvc").read_text())
    md5 = {digits_repo.data_path: tracked["outs"][0]["md5"]}
    return {"repo_url": digits_repo.repo_url, "commit": digits_repo.commit, "md5": md5}


@pytest.fixture(scope="session")
def trained_models(digits_dir, digits_lineage, tmp_path_factory) -> Path:
    """Real models of the digits, trained once per test run, with the digits' lineage in their spec, under the
    returned directory: ``weak`` (one epoch at a tiny learning rate), ``strong`` (four epochs) and
    ``one-epoch`` (one epoch at the default rate). Read only: copy one to change it."""
    from components.train.trainer import TrainConfig, train_model

    def train(root: Path) -> str:
        weak = TrainConfig(epochs=1, learning_rate=1e-4, augment=False)
        train_model(digits_dir, root / "weak", weak, dataset_info=digits_lineage)
        train_model(digits_dir, root / "strong", TrainConfig(epochs=4, augment=False), dataset_info=digits_lineage)
        train_model(digits_dir, root / "one-epoch", TrainConfig(epochs=1, augment=False), dataset_info=digits_lineage)
        return str(root)

    return Path(made_once(tmp_path_factory, "trained-models", train))


@pytest.fixture
def one_epoch_model(trained_models, tmp_path) -> Path:
    """A copy, this test's own, of a digits model trained for one epoch: for tests where rank 0 must have
    written some real model, or a server some real model to serve."""
    copy = tmp_path / "one-epoch-model"
    shutil.copytree(trained_models / "one-epoch", copy)
    return copy


@pytest.fixture(scope="session")
def fake_gcs():
    with FakeGcs() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_remote(fake_gcs, digits_repo, tmp_path_factory) -> dict:
    """The digits pushed with real `dvc push` to gs://dvc-test/store on the fake GCS server.

    Returns the non-secret remote settings a pull needs.
    """
    fake_gcs.client().create_bucket("dvc-test")
    settings = {"url": "gs://dvc-test/store", "endpointurl": fake_gcs.url, "allow_anonymous_login": "true"}
    # Push from a copy so the session's repo keeps only its local remote.
    repo = tmp_path_factory.mktemp("gcs-push") / "repo"
    shutil.copytree(digits_repo.repo_url, repo, symlinks=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "remote", "add", "--local", "gcs", settings["url"]], cwd=repo, check=True)
    for key in ("endpointurl", "allow_anonymous_login"):
        subprocess.run([*dvc, "remote", "modify", "--local", "gcs", key, settings[key]], cwd=repo, check=True)
    subprocess.run([*dvc, "push", "--quiet", "-r", "gcs", "-j", "4"], cwd=repo, check=True)
    return settings


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server on 127.0.0.1 with authentication, holding the bucket ``mlpipeline``."""
    with S3Server() as server:
        server.client().create_bucket(Bucket="mlpipeline")
        yield server


@pytest.fixture
def no_ambient_aws_credentials(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("KFP_TORCH_S3_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def kfp_minio(s3, monkeypatch, tmp_path, no_ambient_aws_credentials):
    """The environment our settings give a pod on a default Kubeflow install (endpoint made local):
    the S3 endpoint, and KFP's Secret mounted as files."""
    monkeypatch.setenv(S3_ENDPOINT_ENV, s3.url)
    monkeypatch.setenv(S3_CREDENTIALS_DIR_ENV, str(mount_secret(tmp_path / "secret", s3.access_key, s3.secret_key)))
    return s3


@pytest.fixture(scope="session")
def digits_predictions(trained_models, digits_dir, tmp_path_factory) -> Path:
    """evaluate's per-image predictions of the session's ``strong`` digits model, made as evaluate makes them."""
    from components.evaluate.evaluation import prediction_rows, run_model, split_for_model
    from components.evaluate.predictions import write_predictions

    model_dir = trained_models / "strong"
    index = split_for_model(digits_dir, model_dir)
    path = tmp_path_factory.mktemp("evaluated") / "predictions.csv.gz"
    write_predictions(path, prediction_rows(run_model(model_dir, index), index))
    return path


@pytest.fixture(scope="session")
def deploy_bentos(trained_models, tmp_path_factory) -> dict[str, dict]:
    """Bentos of the session's ``strong`` digits model, exported as build_bento exports them (each: its descriptor,
    with ``dir`` and ``archive``): ``good``; ``drifted``, the same network served with another normalisation in its
    spec.json (a preprocessing drift); ``broken``, whose ONNX file is damaged, so its service cannot start."""
    from tests.support.deploy_bentos import build_deploy_bentos

    return build_deploy_bentos(trained_models / "strong", tmp_path_factory.mktemp("deploy-bentos"))
