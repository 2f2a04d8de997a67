"""The pytorchjob_train step, without KFP: launch distributed training, collect its model.

``launcher="kubeflow"`` creates a PyTorchJob whose replicas get the artifacts' URIs;
``launcher="local"`` runs the same under ``torchrun`` on this machine with the same
number of processes. What runs in each process:

- the library's training (``components.train.cli``): every rank reads the dataset,
  rank 0 writes the model straight to the output ``Model`` URI;
- or, with ``command``, the user's own (``components.train.contract``): each pod's
  ``script_runner`` copies the dataset, runs the command under torchrun and
  publishes node 0's output directory to the ``Model`` URI.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.kube.api import current_namespace
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import job_name, run_job
from components.common.spec import SPEC_FILE, ModelSpec, load_spec
from components.common.storage import local_copy, publish
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from components.train.cli import config_arguments
from components.train.config import TrainConfig
from components.train.contract import read_metrics
from components.train.local_launcher import library_training, run_torchrun
from components.train.script_runner import check_output, run_script

log = logging.getLogger(__name__)

LAUNCHERS = ("kubeflow", "local")
SCRIPT_RUNNER = ["python", "-m", "components.train.script_runner"]
# activeDeadlineSeconds = timeout_seconds + this, when the user sets none: the launcher deletes the job at its
# own timeout; the operator's deadline only fires when the launcher could not (SIGKILL, a lost node), and stops
# GPUs idling forever then. The margin covers the launcher's own cleanup.
DEADLINE_MARGIN_SECONDS = 600


@dataclass
class ArtifactLocation:
    path: str  # local path KFP gives this step
    uri: str  # what other pods can reach (gs://…, or a shared path)


@dataclass
class StepResult:
    spec: ModelSpec | None  # None: a custom script that did not write the library's format
    metrics: dict[str, float]  # a custom script's metrics.json; the library's come from spec.training


def train_arguments(
    dataset: str, model: str, train: TrainConfig, dataset_info: dict, checkpoint_dir: str, pretrained_weights: str = ""
) -> list[str]:
    args = ["--dataset", dataset, "--model", model, "--dataset-info", json.dumps(dataset_info, sort_keys=True)]
    args += config_arguments(train)
    if checkpoint_dir:
        args += ["--checkpoint-dir", checkpoint_dir]
    if pretrained_weights:
        args += ["--pretrained-weights", pretrained_weights]
    return args


def script_hyperparameters(train: TrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What a custom script receives: the common training parameters, then the user's own (which win)."""
    common = ("epochs", "batch_size", "learning_rate", "seed", "validation_fraction", "test_fraction")
    return {name: getattr(train, name) for name in common} | dict(extra)


def runner_arguments(dataset: str, model: str, hyperparameters: dict, dataset_info: dict, command: list[str]):
    return [
        "--dataset", dataset,
        "--output", model,
        "--hyperparameters", json.dumps(hyperparameters, sort_keys=True),
        "--dataset-info", json.dumps(dataset_info, sort_keys=True),
        "--", *command,
    ]  # fmt: skip


def check_command(command: list[str], hyperparameters: dict[str, Any]) -> None:
    if not isinstance(command, list) or not all(isinstance(part, str) and part for part in command):
        raise ValueError(f"command must be a list of non-empty strings, e.g. ['python', 'train.py'], got {command!r}")
    for name in hyperparameters:
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"hyperparameter name {name!r} must be letters, digits, '_' or '-'")


def run_step(
    launcher: str,
    dataset: ArtifactLocation,
    model: ArtifactLocation,
    job_output_path: str,
    train: TrainConfig,
    job: PyTorchJobConfig,
    run_id: str,
    task_name: str,
    dataset_info: dict[str, Any],
    namespace: str = "",
    checkpoint_dir: str = "",
    timeout_seconds: float = 86400,
    kube_client: KubernetesJobClient | None = None,
    task_id: str = "",
    scheduling_timeout_seconds: float = 600,
    poll_seconds: float = 5.0,
    command: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    pretrained_weights: str = "",
) -> StepResult:
    """Run distributed training to completion; return the model's spec (and a custom script's metrics).

    With the kubeflow launcher the job's name derives from ``run_id``, ``task_name`` and ``task_id`` (unique per
    ParallelFor iteration, stable across retries); ``scheduling_timeout_seconds`` bounds the wait for its pods.
    """
    # Everything that can be checked is checked before a pod or process starts.
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    train.validate()
    command = command or []
    hyperparameters = script_hyperparameters(train, hyperparameters or {})
    if command:
        check_command(command, hyperparameters)
        job = dataclasses.replace(job, command=SCRIPT_RUNNER)
    job.validate()
    for name, value in (
        ("timeout_seconds", timeout_seconds),
        ("scheduling_timeout_seconds", scheduling_timeout_seconds),
    ):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value!r}")

    if launcher == "local":
        processes = job.num_workers * job.nproc_per_node
        write_json_atomic(job_output_path, {"launcher": "local", "nproc_per_node": processes})
        if command:
            with atomic_directory(model.path) as staging:
                staged = str(staging)
                run_script(command, dataset.path, staged, hyperparameters, dataset_info, processes, timeout_seconds)
                check_output(staging)
                metrics = read_metrics(staging)  # a malformed metrics.json fails before the Model appears
            return _result(model.path, metrics)
        args = train_arguments(dataset.path, model.path, train, dataset_info, checkpoint_dir, pretrained_weights)
        first_step = run_torchrun(processes, library_training(args), timeout_seconds)
        log.info("torchrun with %d processes: first training step after %.1f s", processes, first_step)
        return _result(model.path, None)

    name = job_name(run_id, task_name, task_id)
    job = with_deadline_backstop(job, timeout_seconds)
    if command:
        args = runner_arguments(dataset.uri, model.uri, hyperparameters, dataset_info, command)
    else:
        args = train_arguments(dataset.uri, model.uri, train, dataset_info, checkpoint_dir, pretrained_weights)
    manifest = build_manifest(job, name, namespace or current_namespace(), args)
    client = kube_client or KubernetesJobClient.from_environment(PYTORCHJOB)
    run_job(
        client,
        manifest,
        timeout_seconds=timeout_seconds,
        on_created=lambda handle: write_json_atomic(job_output_path, {"launcher": "kubeflow", **handle.as_dict()}),
        poll_seconds=poll_seconds,
        scheduling_timeout_seconds=scheduling_timeout_seconds,
    )
    # Rank 0 wrote the model to its URI. KFP uploads this step's local output path when the step
    # ends, so that path must hold the same files, or it would overwrite the model with nothing.
    # A script's metrics are checked first: a malformed metrics.json leaves no Model behind.
    with local_copy(model.uri) as written:
        metrics = read_metrics(written) if command else None
        if Path(written).resolve() != Path(model.path).resolve():
            publish(Path(written), model.path)
    return _result(model.path, metrics)


def with_deadline_backstop(job: PyTorchJobConfig, timeout_seconds: float) -> PyTorchJobConfig:
    """The job with activeDeadlineSeconds = timeout_seconds + DEADLINE_MARGIN_SECONDS unless the user set one."""
    if job.active_deadline_seconds:
        return job
    return dataclasses.replace(job, active_deadline_seconds=math.ceil(timeout_seconds) + DEADLINE_MARGIN_SECONDS)


def _result(model_dir: str, metrics: dict[str, float] | None) -> StepResult:
    spec = load_spec(model_dir) if (Path(model_dir) / SPEC_FILE).is_file() else None
    if spec is None:
        log.warning(
            "the training script wrote no spec.json: its output is published as the Model as it is, but evaluate, "
            "build_bento and serving need the library's format (weights.pt, spec.json, model.onnx), which "
            "components.train.contract.save_model writes in one call"
        )
    if metrics is None and spec is None:
        log.warning("the training script wrote no metrics.json: the Metrics artifact stays empty")
    return StepResult(spec=spec, metrics=metrics or {})


def default_job_config(image: str, nproc_per_node: int, **settings: Any) -> PyTorchJobConfig:
    return PyTorchJobConfig(
        image=image, command=training_command(nproc_per_node), nproc_per_node=nproc_per_node, **settings
    )
