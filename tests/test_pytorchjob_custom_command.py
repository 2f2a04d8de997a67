"""pytorchjob_train with your own command: the contract, end to end under torchrun, and its PyTorchJob manifest."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from components.common.kube.jobs import KubernetesJobClient
from components.common.processes import free_port
from components.common.spec import ModelFormatError, load_spec
from components.evaluate.evaluation import evaluate
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.step import ArtifactLocation, default_job_config, run_step
from components.train.config import TrainConfig
from components.train.contract import ContractError, script_environment
from components.train.local_launcher import LocalLaunchError
from components.train.rendezvous import rendezvous_from_env
from components.train.script_runner import ScriptFailed, main
from tests.support.fake_kube import FakeKube
from tests.support.fake_pytorchjob import TrainingOperator
from tests.support.operator_rules import crd_validator, webhook_violations
from tests.support.photos import write_photo_dataset

EXAMPLE = [sys.executable, "-m", "components.pytorchjob_train.examples.custom_train"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "data", per_class=10)


def run_local(tmp_path: Path, dataset: Path, command: list[str], processes: int = 2, **hyperparameters):
    return run_step(
        launcher="local",
        dataset=ArtifactLocation(str(dataset), str(dataset)),
        model=ArtifactLocation(str(tmp_path / "model"), str(tmp_path / "model")),
        job_output_path=str(tmp_path / "job"),
        train=TrainConfig(epochs=3, seed=4, learning_rate=0.01),
        job=default_job_config("registry.example.com/team/train:1", 1, num_workers=processes),
        run_id="run",
        task_name="train",
        dataset_info={"commit": "0ff1ce"},
        command=command,
        hyperparameters=hyperparameters,
    )


@pytest.mark.slow
def test_the_example_script_trains_under_torchrun_and_its_model_is_evaluable(photos, tmp_path):
    result = run_local(tmp_path, photos, EXAMPLE, image_size=24)
    assert set(result.metrics) == {"train_loss"} and result.metrics["train_loss"] > 0
    spec = result.spec
    assert spec.classes == ["cat", "coffee", "rocket"] and spec.input_shape == [3, 24, 24]
    assert spec.dataset == {"commit": "0ff1ce"}  # lineage from the contract's KFP_TORCH_DATASET_INFO
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "metrics.json",
        "model.onnx",
        "program.pt2",
        "spec.json",
        "weights.pt",
    ]
    assert json.loads((tmp_path / "job").read_text()) == {"launcher": "local", "nproc_per_node": 2}
    evaluation = evaluate(tmp_path / "model", photos)  # without the script's code, through its program
    assert evaluation.samples > 0 and evaluation.onnx_max_difference <= 1e-4


SPY = """
import json, os, sys
from components.train.contract import script_environment
job = script_environment()
record = {{"argv": sys.argv[1:], "rank": job.rank, "local_rank": job.local_rank, "world_size": job.world_size,
          "local_world_size": os.environ.get("LOCAL_WORLD_SIZE"), "master": os.environ.get("MASTER_ADDR"),
          "dataset_dir": str(job.dataset_dir), "hyperparameters": job.hyperparameters, "info": job.dataset_info}}
(job.output_dir / f"rank-{{job.rank}}.json").write_text(json.dumps(record))
{tail}
"""


def spy(tmp_path: Path, tail: str = "") -> list[str]:
    script = tmp_path / "spy.py"
    script.write_text(SPY.format(tail=tail))
    return [sys.executable, str(script)]


def test_the_script_receives_the_contract(photos, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = run_local(tmp_path, photos, spy(tmp_path), batch_size=16, warmup="linear")
    records = [json.loads((tmp_path / "model" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(records):
        assert (record["rank"], record["local_rank"], record["world_size"]) == (rank, rank, 2)
        assert record["local_world_size"] == "2" and record["master"]
        assert record["dataset_dir"] == str(photos) and record["info"] == {"commit": "0ff1ce"}
        assert record["hyperparameters"] == {
            "epochs": 3,
            "batch_size": 16,  # the user's own override the step's
            "learning_rate": 0.01,
            "seed": 4,
            "test_fraction": 0.2,
            "validation_fraction": 0.1,
            "warmup": "linear",
        }
        argv = record["argv"]
        assert argv[argv.index("--dataset-dir") + 1] == str(photos)
        assert argv[argv.index("--batch-size") + 1] == "16" and argv[argv.index("--warmup") + 1] == "linear"
    # No library format: still published, and the step says the later steps need it.
    assert result.spec is None and result.metrics == {}
    assert "evaluate, build_bento and serving need the library's format" in caplog.text
    with pytest.raises(ModelFormatError, match=r"components.train.contract.save_model"):
        evaluate(tmp_path / "model", photos)


def test_a_script_that_writes_nothing_fails_the_step_without_a_model(photos, tmp_path):
    with pytest.raises(ScriptFailed, match=r"exited 0 but wrote nothing to KFP_TORCH_OUTPUT_DIR"):
        run_local(tmp_path, photos, [sys.executable, "-c", "pass"], processes=1)
    assert not (tmp_path / "model").exists()


def test_malformed_metrics_fail_the_step_without_a_model(photos, tmp_path):
    tail = "(job.output_dir / 'metrics.json').write_text(json.dumps({'accuracy': 'high'}))"
    with pytest.raises(ContractError, match=r"metric 'accuracy' must be a finite number, got 'high'"):
        run_local(tmp_path, photos, spy(tmp_path, tail), processes=1)
    assert not (tmp_path / "model").exists()


def test_a_failing_script_names_its_error(photos, tmp_path):
    command = [sys.executable, "-c", "raise SystemExit('CUDA error: out of memory')"]
    with pytest.raises(LocalLaunchError, match=r"torchrun exited with status"):
        run_local(tmp_path, photos, command, processes=1)
    assert not (tmp_path / "model").exists()


def test_a_script_outside_the_step_is_told_so():
    with pytest.raises(ContractError, match=r"KFP_TORCH_DATASET_DIR, KFP_TORCH_OUTPUT_DIR not set"):
        script_environment({})


@pytest.mark.parametrize(
    "command, hyperparameters, message",
    [
        (["python", ""], {}, r"command must be a list of non-empty strings"),
        ("python train.py", {}, r"command must be a list of non-empty strings"),
        (["python", "train.py"], {"bad name!": 1}, r"hyperparameter name 'bad name!' must be letters"),
    ],
)
def test_bad_commands_fail_before_anything_starts(photos, tmp_path, command, hyperparameters, message):
    with pytest.raises(ValueError, match=message):
        run_local(tmp_path, photos, command, **hyperparameters)
    assert not (tmp_path / "job").exists()


# --- in a PyTorchJob ------------------------------------------------------------------------------------


def test_the_pytorchjob_runs_the_users_image_and_command_through_the_runner(photos, tmp_path):
    shared = tmp_path / "shared-model"  # where node 0's runner publishes (the Model's URI)
    run_local(tmp_path / "earlier", photos, EXAMPLE, processes=1, image_size=16)
    os.rename(tmp_path / "earlier" / "model", shared)
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    try:
        result = run_step(
            launcher="kubeflow",
            dataset=ArtifactLocation(str(photos), "gs://bucket/run/dvc-pull/dataset"),
            model=ArtifactLocation(str(tmp_path / "model"), str(shared)),
            job_output_path=str(tmp_path / "job"),
            train=TrainConfig(epochs=2),
            job=default_job_config("registry.example.com/team/train:1", 2, num_workers=2, gpus=2),
            run_id="2f0c-run",
            task_name="pytorchjob-train",
            dataset_info={"commit": "abc"},
            namespace="team-a",
            kube_client=KubernetesJobClient(kube.api_client(), PYTORCHJOB),
            poll_seconds=0.05,
            command=["python", "/app/train.py", "--arch", "vit"],
            hyperparameters={"image_size": 16},
        )
        ((_, _), job) = next(iter(operator.objects.items()))
    finally:
        kube.stop()
    manifest = job.body
    assert sorted(crd_validator().iter_errors(manifest), key=str) == []
    assert webhook_violations(manifest) == []
    container = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/team/train:1" and container["name"] == "pytorch"
    assert container["command"] == ["python", "-m", "components.train.script_runner"]
    args = container["args"]
    assert args[args.index("--dataset") + 1] == "gs://bucket/run/dvc-pull/dataset"
    assert args[args.index("--output") + 1] == str(shared)
    assert args[args.index("--") + 1 :] == ["python", "/app/train.py", "--arch", "vit"]
    assert json.loads(args[args.index("--hyperparameters") + 1])["image_size"] == 16
    assert manifest["spec"]["nprocPerNode"] == "2"
    assert job.deleted
    assert result.spec.input_shape == [3, 16, 16] and result.metrics["train_loss"] > 0
    assert (tmp_path / "model" / "model.onnx").is_file()  # what KFP uploads as the Model


def test_the_runner_in_a_replica_fetches_runs_and_publishes(photos, tmp_path, monkeypatch):
    """script_runner as a Master pod runs it: the operator's variables, one node of two processes."""
    port = str(free_port())
    operator_env = {
        "PET_NNODES": "1",
        "PET_NODE_RANK": "0",
        "PET_NPROC_PER_NODE": "2",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": port,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "WORLD_SIZE": "2",
        "RANK": "0",
    }
    for key, value in operator_env.items():
        monkeypatch.setenv(key, value)
    output = tmp_path / "published"
    hyperparameters = '{"epochs": 1, "seed": 0, "learning_rate": 0.01, "image_size": 16}'
    args = ["--dataset", str(photos), "--output", str(output), "--hyperparameters", hyperparameters]
    assert main([*args, "--", *EXAMPLE]) == 0
    assert load_spec(output).input_shape == [3, 16, 16]
    assert (output / "metrics.json").is_file()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (1, ["--standalone"], True)),
        (
            {"PET_NNODES": "3", "PET_NODE_RANK": "2", "PET_NPROC_PER_NODE": "4", "MASTER_ADDR": "j-master-0"}
            | {"MASTER_PORT": "23456"},
            (4, ["--nnodes=3", "--node-rank=2", "--master-addr=j-master-0", "--master-port=23456"], False),
        ),
        (
            {"PET_NNODES": "2", "PET_NODE_RANK": "0", "PET_NPROC_PER_NODE": "1", "PET_MASTER_ADDR": "m"}
            | {"PET_MASTER_PORT": "1", "MASTER_ADDR": "x", "MASTER_PORT": "2"},
            (1, ["--nnodes=2", "--node-rank=0", "--master-addr=m", "--master-port=1"], True),
        ),
    ],
)
def test_rendezvous_from_the_operators_variables(env, expected):
    assert rendezvous_from_env(copy.deepcopy(env)) == expected


def test_malformed_metrics_from_a_pytorchjob_leave_no_model(photos, tmp_path):
    shared = tmp_path / "shared-model"
    shared.mkdir()
    (shared / "weights.bin").write_bytes(b"\0")
    (shared / "metrics.json").write_text('{"loss": NaN}')
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    try:
        with pytest.raises(ContractError, match=r"metric 'loss' must be a finite number"):
            run_step(
                launcher="kubeflow",
                dataset=ArtifactLocation(str(photos), "gs://bucket/run/dvc-pull/dataset"),
                model=ArtifactLocation(str(tmp_path / "model"), str(shared)),
                job_output_path=str(tmp_path / "job"),
                train=TrainConfig(epochs=1),
                job=default_job_config("registry.example.com/team/train:1", 1, num_workers=1),
                run_id="run",
                task_name="pytorchjob-train",
                dataset_info={},
                namespace="team-a",
                kube_client=KubernetesJobClient(kube.api_client(), PYTORCHJOB),
                poll_seconds=0.05,
                command=["python", "/app/train.py"],
            )
    finally:
        kube.stop()
    assert not (tmp_path / "model").exists()
