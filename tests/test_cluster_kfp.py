"""Opt-in: the kfp-torch command line (kfp.Client underneath) against a real Kubeflow Pipelines API.

Skipped unless KFP_TORCH_LIFECYCLE_KFP_HOST is set (for example http://127.0.0.1:8080 after
``kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80``). Also read, as for the command line:
KFP_NAMESPACE and KFP_TOKEN_FILE on a multi-user cluster. With KFP_TORCH_LIFECYCLE_DATA_REPO (a git
repository with DVC-tracked data/raw the cluster can pull, and the images of components/container_images.py
pushed) it also runs the training pipeline to the end.
"""

from __future__ import annotations

import os
import uuid

import pytest

from pipelines.cli import main as kfp_torch
from pipelines.compile import compile_all

pytestmark = pytest.mark.cluster
HOST = os.environ.get("KFP_TORCH_LIFECYCLE_KFP_HOST", "")
DATA_REPO = os.environ.get("KFP_TORCH_LIFECYCLE_DATA_REPO", "")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    if not HOST:
        pytest.skip("set KFP_TORCH_LIFECYCLE_KFP_HOST to run against a Kubeflow Pipelines API")
    return {path.stem: path for path in compile_all(tmp_path_factory.mktemp("compiled"))}


def test_upload_is_idempotent_and_schedules_round_trip(compiled, capsys):
    name = f"kfp-torch-lifecycle-test-{uuid.uuid4().hex[:8]}"
    pipeline = str(compiled["training_pipeline"])
    assert kfp_torch(["--host", HOST, "upload", pipeline, "--name", name]) == 0
    assert kfp_torch(["--host", HOST, "upload", pipeline, "--name", name]) == 0
    assert "already" in capsys.readouterr().out.lower()
    schedule = ["--host", HOST, "schedule"]
    created = kfp_torch(
        [*schedule, "create", "--pipeline", name, "--name", name, "--cron", "0 3 * * *", "--disabled"]
        + ["--param", "repo_url=https://example.com/data.git"]
    )
    assert created == 0
    recurring_run_id = capsys.readouterr().out.split("created recurring run ", 1)[1].split()[0]
    for action in ("enable", "disable", "delete"):
        assert kfp_torch([*schedule, action, recurring_run_id]) == 0
    assert kfp_torch(["--host", HOST, "runs", "list", "--limit", "1"]) == 0


@pytest.mark.skipif(not DATA_REPO, reason="set KFP_TORCH_LIFECYCLE_DATA_REPO to run the pipeline on the cluster")
def test_the_training_pipeline_runs_to_success(compiled):
    code = kfp_torch(
        [
            "--host",
            HOST,
            "run",
            str(compiled["training_pipeline"]),
            "--experiment",
            "kfp-torch-lifecycle-tests",
            "--param",
            f"repo_url={DATA_REPO}",
            "--param",
            "epochs=2",
            "--param",
            "accuracy_threshold=0.5",
            "--param",
            "build_image=false",
            "--wait",
            "--timeout",
            "3600",
        ]
    )
    assert code == 0
