"""pytorchjob_train end to end: real torchrun DDP on CPU, and the kubeflow launcher against a fake API server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from components.common.kube.jobs import KubernetesJobClient
from components.common.spec import load_spec
from components.evaluate.evaluation import evaluate
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.step import ArtifactLocation, default_job_config, run_step
from components.train.trainer import TrainConfig, train_model
from pipelines.local import run_local
from tests.support.fake_kube import FakeKube
from tests.support.fake_pytorchjob import TrainingOperator
from tests.support.operator_rules import crd_validator, webhook_violations


def locations(tmp_path: Path, dataset_dir: Path) -> dict:
    return {
        "dataset": ArtifactLocation(str(dataset_dir), str(dataset_dir)),
        "model": ArtifactLocation(str(tmp_path / "model"), str(tmp_path / "model")),
        "job_output_path": str(tmp_path / "job"),
    }


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_accuracy(digits_dir, tmp_path):
    config = TrainConfig(augment=False)
    spec = run_step(
        launcher="local",
        train=config,
        job=default_job_config("unused", 1, num_workers=2),
        run_id="run",
        task_name="task",
        dataset_info={"commit": "abc"},
        **locations(tmp_path, digits_dir),
    ).spec
    assert spec.training["world_size"] == 2
    assert spec.dataset == {"commit": "abc"}
    assert json.loads((tmp_path / "job").read_text()) == {"launcher": "local", "nproc_per_node": 2}
    train_model(digits_dir, tmp_path / "single", config)
    ddp, single = evaluate(tmp_path / "model", digits_dir), evaluate(tmp_path / "single", digits_dir)
    assert ddp.accuracy >= 0.95
    assert abs(ddp.accuracy - single.accuracy) <= 0.01


def test_failing_local_training_fails_the_step_without_a_model(digits_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match=r"(?s)torchrun exited with status .*DatasetFormatError: no dataset found"):
        run_step(
            launcher="local",
            train=TrainConfig(epochs=1),
            job=default_job_config("unused", 1, num_workers=2),
            run_id="run",
            task_name="task",
            dataset_info={},
            **locations(tmp_path, tmp_path / "empty"),
        )
    assert not (tmp_path / "model").exists()


def test_kubeflow_launcher_collects_the_model_rank_0_wrote(digits_dir, one_epoch_model, tmp_path):
    shared = one_epoch_model  # where rank 0 wrote: the output's URI (a gs:// root or shared path)
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    try:
        spec = run_step(
            launcher="kubeflow",
            dataset=ArtifactLocation(str(digits_dir), "gs://bucket/run/dvc-pull/dataset"),
            model=ArtifactLocation(str(tmp_path / "model"), str(shared)),
            job_output_path=str(tmp_path / "job"),
            train=TrainConfig(epochs=1),
            job=default_job_config("registry.example.com/train:1", 1, num_workers=3),
            run_id="2f0c-run",
            task_name="pytorchjob-train",
            dataset_info={"commit": "abc"},
            namespace="team-a",
            kube_client=KubernetesJobClient(kube.api_client(), PYTORCHJOB),
            poll_seconds=0.05,
        ).spec
        ((namespace, name), job) = next(iter(operator.objects.items()))
    finally:
        kube.stop()
    assert spec.classes == load_spec(shared).classes
    assert (tmp_path / "model" / "weights.pt").is_file()
    handle = json.loads((tmp_path / "job").read_text())
    assert handle["name"] == name and handle["namespace"] == namespace == "team-a" and handle["launcher"] == "kubeflow"
    args = job.body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--dataset") + 1] == "gs://bucket/run/dvc-pull/dataset"
    assert args[args.index("--model") + 1] == str(shared)
    assert job.body["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert job.deleted


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"launcher": "slurm"}, r"launcher must be one of pytorchjob, kubeflow, local, got 'slurm'"),
        ({"timeout_seconds": 0}, r"timeout_seconds must be > 0"),
        ({"scheduling_timeout_seconds": -1}, r"scheduling_timeout_seconds must be > 0 seconds, got -1"),
        ({"job": default_job_config("img", 1, num_workers=0)}, r"num_workers must be an integer >= 1, got 0"),
        ({"job": default_job_config("img", 1, gpus=-1)}, r"gpus must be an integer >= 0, got -1"),
    ],
)
def test_bad_values_fail_before_anything_starts(digits_dir, tmp_path, overrides, message):
    arguments = {
        "launcher": "local",
        "train": TrainConfig(epochs=1),
        "job": default_job_config("img", 1),
        "run_id": "r",
        "task_name": "t",
        "dataset_info": {},
        **locations(tmp_path, digits_dir),
    } | overrides
    with pytest.raises(ValueError, match=message):
        run_step(**arguments)
    assert not (tmp_path / "job").exists() and not (tmp_path / "model").exists()


def kubeflow_step(tmp_path: Path, kube: FakeKube, iteration: str, **overrides):
    """A kubeflow step with a custom command whose replicas already wrote their output (no training here)."""
    shared = tmp_path / "shared-model"
    shared.mkdir(exist_ok=True)
    (shared / "metrics.json").write_text('{"loss": 0.5}')
    arguments = {
        "launcher": "kubeflow",
        "dataset": ArtifactLocation(str(tmp_path), "gs://bucket/run/dvc-pull/dataset"),
        "model": ArtifactLocation(str(tmp_path / iteration / "model"), str(shared)),
        "job_output_path": str(tmp_path / iteration / "job"),
        "train": TrainConfig(epochs=1),
        "job": default_job_config("registry.example.com/team/train:1", 1, num_workers=1),
        "run_id": "2f0c-run",
        "task_name": "pytorchjob-train",
        "dataset_info": {},
        "namespace": "team-a",
        "kube_client": KubernetesJobClient(kube.api_client(), PYTORCHJOB),
        "poll_seconds": 0.05,
        "command": ["python", "/app/train.py"],
    } | overrides
    run_step(**arguments)
    return json.loads((tmp_path / iteration / "job").read_text())


def test_parallelfor_iterations_each_get_their_own_job(tmp_path):
    """Iterations share the run id and the task name: the task id keeps them off each other's job."""
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    handles, errors = {}, []

    def iteration(task_id: str) -> None:
        try:
            handles[task_id] = kubeflow_step(tmp_path, kube, f"iteration-{task_id}", task_id=task_id)
        except Exception as error:  # surfaced below, in the test's thread
            errors.append(error)

    try:
        threads = [threading.Thread(target=iteration, args=(task_id,)) for task_id in ("101", "102")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        kube.stop()
    assert not errors, errors
    assert handles["101"]["name"] != handles["102"]["name"]
    assert not handles["101"]["attached"] and not handles["102"]["attached"]
    assert len(operator.created) == 2 and all(job.deleted for job in operator.created)


def test_the_job_carries_a_deadline_in_case_the_step_dies(tmp_path):
    """activeDeadlineSeconds: the Training Operator stops the job even when the step was SIGKILLed."""
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    try:
        kubeflow_step(tmp_path, kube, "default", timeout_seconds=3600.5)
        user_job = default_job_config(
            "registry.example.com/team/train:1", 1, num_workers=1, active_deadline_seconds=7200
        )
        kubeflow_step(tmp_path, kube, "user", timeout_seconds=3600, job=user_job, task_id="other")
    finally:
        kube.stop()
    default, user = (job.body for job in operator.created)
    assert default["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3601 + 600  # timeout_seconds + the margin
    assert user["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200  # the user's own wins
    assert sorted(crd_validator().iter_errors(default), key=str) == [] and webhook_violations(default) == []


@pytest.mark.slow
def test_distributed_pipeline_under_kfp_local(digits_repo, tmp_path):
    run_dir = run_local(
        {
            "repo_url": digits_repo.repo_url,
            "epochs": 4,
            "augment": False,
            "accuracy_threshold": 0.9,
            "num_workers": 2,
            "build_image": False,
        },
        tmp_path / "root",
        distributed=True,
    )
    spec = load_spec(run_dir / "distributed-train" / "model")
    assert spec.training["world_size"] == 2
    assert (run_dir / "register" / "registered" / "promotion.json").is_file()


def test_distributed_pipeline_rejects_bad_arguments_before_running(digits_repo, tmp_path):
    with pytest.raises(ValueError, match=r"num_workers must be an integer >= 1, got 0"):
        run_local({"repo_url": digits_repo.repo_url, "num_workers": 0}, tmp_path / "root", distributed=True)
    with pytest.raises(ValueError, match=r"launcher must be one of auto, trainjob, pytorchjob, local, kubeflow"):
        run_local({"repo_url": digits_repo.repo_url, "launcher": "ssh"}, tmp_path / "root", distributed=True)
