"""trainjob_train end to end: the step with launcher=trainjob against the fake Kubeflow Trainer, launcher=local under
real torchrun, the script runner in a node with the torch plugin's exact variables, and v2.1's deadline wrapper."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from components.common.kube.jobs import KubernetesJobClient
from components.common.processes import free_port
from components.common.spec import load_spec
from components.train.config import TrainConfig
from components.train.deadline import EXPIRED, run_until
from components.train.deadline import main as deadline_main
from components.train.rendezvous import rendezvous_from_env
from components.train.script_runner import main as script_runner
from components.trainjob_train.kind import TRAINJOB
from components.trainjob_train.manifest import build_manifest
from components.trainjob_train.step import ArtifactLocation, default_job_config, run_step
from tests.support.fake_jobs import Step
from tests.support.fake_kube import FakeKube
from tests.support.fake_trainjob import KubeflowTrainer, pod_environment
from tests.support.photos import write_photo_dataset
from tests.support.trainer_rules import cel_errors, schema_errors

EXAMPLE = [sys.executable, "-m", "components.pytorchjob_train.examples.custom_train"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "data", per_class=10)


@pytest.mark.parametrize("release", ["2.3", "2.1"])
def test_the_trainjob_launcher_collects_the_model_rank_0_wrote(digits_dir, one_epoch_model, tmp_path, release):
    shared = one_epoch_model  # where rank 0 wrote: the output's URI
    trainer = KubeflowTrainer(release=release)
    kube = FakeKube([trainer]).start()
    try:
        spec = run_step(
            launcher="trainjob",
            dataset=ArtifactLocation(str(digits_dir), "gs://bucket/run/dvc-pull/dataset"),
            model=ArtifactLocation(str(tmp_path / "model"), str(shared)),
            job_output_path=str(tmp_path / "job"),
            train=TrainConfig(epochs=1),
            job=default_job_config("registry.example.com/train:1", 1, num_nodes=3, trainer_release=release),
            run_id="2f0c-run",
            task_name="trainjob-train",
            dataset_info={"commit": "abc"},
            namespace="team-a",
            kube_client=KubernetesJobClient(kube.api_client(), TRAINJOB),
            poll_seconds=0.05,
        ).spec
        ((namespace, name), job) = next(iter(trainer.objects.items()))
    finally:
        kube.stop()
    assert spec.classes == load_spec(shared).classes and (tmp_path / "model" / "weights.pt").is_file()
    handle = json.loads((tmp_path / "job").read_text())
    assert handle == {**handle, "launcher": "trainjob", "kind": "TrainJob", "name": name, "namespace": "team-a"}
    trainer_spec = job.body["spec"]["trainer"]
    assert trainer_spec["args"][trainer_spec["args"].index("--dataset") + 1] == "gs://bucket/run/dvc-pull/dataset"
    assert trainer_spec["numNodes"] == 3 and trainer_spec["command"][-5:] == [
        "python", "-m", "torch.distributed.run", "-m", "components.train.cli",
    ]  # fmt: skip
    assert schema_errors(job.body, release) == [] and cel_errors(job.body, release) == []
    if release == "2.3":
        assert job.body["spec"]["activeDeadlineSeconds"] == 86400 + 600  # the backstop
    else:
        assert trainer_spec["command"][:4] == ["python", "-m", "components.train.deadline", "--until"]
        assert abs(int(trainer_spec["command"][4]) - (time.time() + 87000)) < 60
    assert job.deleted


def test_a_users_command_runs_on_every_node_through_the_runner(photos, tmp_path):
    shared = tmp_path / "shared-model"
    shared.mkdir()
    (shared / "metrics.json").write_text('{"train_loss": 0.5}')
    (shared / "weights.bin").write_bytes(b"\0")
    trainer = KubeflowTrainer()
    kube = FakeKube([trainer]).start()
    try:
        result = run_step(
            launcher="trainjob",
            dataset=ArtifactLocation(str(photos), "gs://bucket/data"),
            model=ArtifactLocation(str(tmp_path / "model"), str(shared)),
            job_output_path=str(tmp_path / "job"),
            train=TrainConfig(epochs=2),
            job=default_job_config("registry.example.com/team/train:1", 2, num_nodes=2, gpus=2),
            run_id="run",
            task_name="trainjob-train",
            dataset_info={},
            namespace="team-a",
            kube_client=KubernetesJobClient(kube.api_client(), TRAINJOB),
            poll_seconds=0.05,
            command=["python", "/app/train.py"],
        )
        (job,) = trainer.objects.values()
    finally:
        kube.stop()
    trainer_spec = job.body["spec"]["trainer"]
    assert trainer_spec["command"] == ["python", "-m", "components.train.script_runner"]
    assert trainer_spec["args"][trainer_spec["args"].index("--") + 1 :] == ["python", "/app/train.py"]
    assert trainer_spec["numProcPerNode"] == 2 and result.metrics == {"train_loss": 0.5}


@pytest.mark.parametrize("release", ["2.3", "2.1"])
def test_the_runner_in_a_node_rendezvous_with_the_torch_plugins_exact_variables(photos, tmp_path, monkeypatch, release):
    """script_runner as node 0 of a one-node TrainJob runs it: its environment is the fake Trainer's node container's,
    as the kubelet resolves it (PET_NODE_RANK from the completion index), nothing else; only the master's address and
    port are this machine's, since the headless Service's name resolves only in a cluster."""
    trainer = KubeflowTrainer(release=release, script=[Step(0, "Running")])
    kube = FakeKube([trainer]).start()
    try:
        config = default_job_config("img:1", 2, num_nodes=1, trainer_release=release)
        KubernetesJobClient(kube.api_client(), TRAINJOB).create(build_manifest(config, "train-abc", "team-a", []))
        ((_, _, pod),) = kube.pods("team-a", time.monotonic())
    finally:
        kube.stop()
    env = pod_environment(pod)
    assert set(env) == {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
    assert rendezvous_from_env(env) == (
        2,
        ["--nnodes=1", "--node-rank=0", "--master-addr=train-abc-node-0-0.train-abc", "--master-port=29500"],
        True,
    )
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (env | {"PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(free_port())}).items():
        monkeypatch.setenv(key, value)
    output = tmp_path / "published"
    hyperparameters = '{"epochs": 1, "seed": 0, "learning_rate": 0.01, "image_size": 16}'
    args = ["--dataset", str(photos), "--output", str(output), "--hyperparameters", hyperparameters]
    assert script_runner([*args, "--", *EXAMPLE]) == 0
    assert load_spec(output).input_shape == [3, 16, 16]


def test_torchruns_words_for_processes_per_node_pass_through():
    env = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "auto", "PET_NODE_RANK": "1"}
    env |= {"PET_MASTER_ADDR": "t-node-0-0.t", "PET_MASTER_PORT": "29500"}
    assert rendezvous_from_env(env) == (
        "auto",
        ["--nnodes=2", "--node-rank=1", "--master-addr=t-node-0-0.t", "--master-port=29500"],
        False,
    )


def test_trainjob_step_runs_locally_under_torchrun_and_fails_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match=r"(?s)torchrun exited with status .*no dataset found"):
        run_step(
            launcher="local",
            dataset=ArtifactLocation(str(tmp_path / "empty"), str(tmp_path / "empty")),
            model=ArtifactLocation(str(tmp_path / "model"), str(tmp_path / "model")),
            job_output_path=str(tmp_path / "job"),
            train=TrainConfig(epochs=1),
            job=default_job_config("unused", 1, num_nodes=2),
            run_id="run",
            task_name="task",
            dataset_info={},
        )
    assert json.loads((tmp_path / "job").read_text()) == {"launcher": "local", "nproc_per_node": 2}
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "launcher, message",
    [("pytorchjob", r"launcher must be one of trainjob, local, got 'pytorchjob'"), ("trainjob", r"queue_timeout")],
)
def test_bad_values_fail_before_anything_starts(tmp_path, launcher, message):
    with pytest.raises(ValueError, match=message):
        run_step(
            launcher=launcher,
            dataset=ArtifactLocation("d", "d"),
            model=ArtifactLocation("m", "m"),
            job_output_path=str(tmp_path / "job"),
            train=TrainConfig(epochs=1),
            job=default_job_config("img", 1),
            run_id="run",
            task_name="task",
            dataset_info={},
            queue_timeout_seconds=0,
        )


# --- v2.1's backstop ---------------------------------------------------------------------------------------------


def test_the_deadline_wrapper_passes_the_commands_status_through():
    assert run_until([sys.executable, "-c", "raise SystemExit(3)"], time.time() + 60) == 3


def test_the_deadline_wrapper_stops_the_command_at_the_deadline(tmp_path):
    marker = tmp_path / "stopped"
    script = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w'), sys.exit(0)))\n"
        "time.sleep(60)"
    )
    began = time.monotonic()
    assert run_until([sys.executable, "-c", script], time.time() + 1.0, grace_seconds=5) == EXPIRED
    assert time.monotonic() - began < 10 and marker.exists()  # it got SIGTERM first


def test_a_node_restarted_after_the_deadline_exits_at_once(capsys):
    assert deadline_main(["--until", str(time.time() - 1), "--", sys.executable, "-c", "print('trained')"]) == EXPIRED
    assert "has passed; not starting" in capsys.readouterr().out


def test_the_deadline_wrapper_runs_as_a_module():
    import subprocess

    until = str(time.time() + 60)
    done = subprocess.run(
        [sys.executable, "-m", "components.train.deadline", "--until", until, "--", "true"], env=os.environ
    )
    assert done.returncode == 0
