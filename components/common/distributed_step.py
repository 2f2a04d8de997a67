"""What every distributed training step shares, whichever kind of job runs it (PyTorchJob, TrainJob).

A distributed step either runs ``torchrun`` on this machine (``launcher="local"``, what ``kfp.local`` uses) or
creates a job whose replica pods get the artifacts' URIs. What runs in each process is the same:

- the library's training (``components.train.cli``): every rank reads the dataset, rank 0 writes the model
  straight to the output ``Model`` URI (``train_arguments``);
- or, with ``command``, the user's own (``components.train.contract``): each pod's ``script_runner`` copies the
  dataset, runs the command under torchrun and publishes node 0's output directory to the ``Model`` URI
  (``runner_arguments``).

This module holds the checks made before anything starts (``prepare``), the local run (``run_local``), the
replicas' arguments (``job_arguments``), the job handle written when the job exists (``handle_writer``) and the
collection of what rank 0 wrote (``collect_model``). Each job component adds its own manifest and ``JobKind``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.kube.runner import JobHandle
from components.common.spec import SPEC_FILE, ModelSpec, load_spec
from components.common.storage import local_copy, publish
from components.train.cli import config_arguments
from components.train.config import TrainConfig
from components.train.contract import read_metrics
from components.train.local_launcher import library_training, run_torchrun
from components.train.script_runner import check_output, run_script

log = logging.getLogger(__name__)

SCRIPT_RUNNER = ["python", "-m", "components.train.script_runner"]
# activeDeadlineSeconds = timeout_seconds + this, when the user sets none: the launcher deletes the job at its
# own timeout; the controller's deadline only fires when the launcher could not (SIGKILL, a lost node), and stops
# GPUs idling forever then. The margin covers the launcher's own cleanup.
DEADLINE_MARGIN_SECONDS = 600
SCRIPT_PARAMETERS = ("epochs", "batch_size", "learning_rate", "seed", "validation_fraction", "test_fraction")
# The inputs and outputs every distributed training component has beyond its job's config (``ReplicaConfig`` and
# its kind's subclass) and ``TrainConfig``, described once for their docstrings.
STEP_INPUTS = {
    "dataset": "A dataset directory (dvc_pull's output); the training pods read it by URI.",
    "model": "The trained model, written by rank 0 straight to this artifact's URI (a gs://, s3:// or minio:// "
    "pipeline root, or a shared path), in train's format. Metadata: format, architecture, classes, input_shape, "
    "world_size, dataset_commit and the dataset's lineage; with your own command, the command and image.",
    "metrics": "Per-epoch and final train and validation loss and accuracy, or your own script's metrics.json.",
    "job": "The job handle (launcher, kind, name, namespace, uid), written as soon as the job exists: which kind "
    "ran, and what to look for with kubectl.",
    "run_id": "Pass dsl.PIPELINE_JOB_ID_PLACEHOLDER: the job's name derives from it at run time, so that runs "
    "(recurring ones too) never share a job.",
    "task_name": "Pass dsl.PIPELINE_TASK_NAME_PLACEHOLDER: part of the job's name, the same when the step is "
    "retried, so a retry re-attaches to its job.",
    "task_id": "Pass dsl.PIPELINE_TASK_ID_PLACEHOLDER: part of the job's name, which tells the iterations of a "
    "ParallelFor apart.",
    "image": "The training pods' image; empty for this library's CUDA training image. With your own command, an "
    "image that holds this library (its script runner fetches the dataset and publishes the output).",
    "command": "Empty for the library's training; else your own command, run on every pod under torchrun in "
    "image, with the contract of components.train.contract (environment, arguments, outputs).",
    "script_hyperparameters": "Extra hyperparameters for your own command, beside "
    f"{', '.join(SCRIPT_PARAMETERS)} (yours win); unused without command.",
    "pretrained_weights": "A checkpoint file or Model directory to start from, by a path or URI the training pods "
    "can read (gs://, s3://, minio://); never downloaded from a hub. Empty: from scratch.",
    "namespace": "Where the job runs; empty for this step's own namespace.",
    "timeout_seconds": "Wall-clock limit of the step; on timeout the job is deleted and the step fails.",
    "scheduling_timeout_seconds": "How long the job's pods may wait to start (unschedulable, image not pulled); "
    "then the step fails with the pods' own reasons and Events, and the job is deleted.",
    "queue_timeout_seconds": "How long a TrainJob may stay suspended, waiting in its Kueue queue (queue_name), at a "
    "stretch; then the step fails naming the queue, and the job is deleted.",
    "checkpoint_dir": "A path every pod shares (such as a PVC) where rank 0 writes a checkpoint after every epoch, "
    "so a retried step resumes; empty: no checkpoint.",
}


@dataclass
class ArtifactLocation:
    path: str  # local path KFP gives this step
    uri: str  # what other pods can reach (gs://…, or a shared path)


@dataclass
class StepResult:
    spec: ModelSpec | None  # None: a custom script that did not write the library's format
    metrics: dict[str, float]  # a custom script's metrics.json; the library's come from spec.training


def check_launcher(launcher: str, launchers: tuple[str, ...]) -> None:
    if launcher not in launchers:
        raise ValueError(f"launcher must be one of {', '.join(launchers)}, got {launcher!r}")


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
    return {name: getattr(train, name) for name in SCRIPT_PARAMETERS} | dict(extra)


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


def check_seconds(**limits: Any) -> None:
    """Each named limit must be a positive number of seconds."""
    for name, value in limits.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value!r}")


def prepare(
    train: TrainConfig, command: list[str] | None, hyperparameters: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any]]:
    """(command, the script's hyperparameters), after checking the training parameters and the command."""
    train.validate()
    command = command or []
    hyperparameters = script_hyperparameters(train, hyperparameters or {})
    if command:
        check_command(command, hyperparameters)
    return command, hyperparameters


def run_local(
    processes: int,
    dataset: ArtifactLocation,
    model: ArtifactLocation,
    job_output_path: str,
    train: TrainConfig,
    dataset_info: dict[str, Any],
    timeout_seconds: float,
    checkpoint_dir: str = "",
    pretrained_weights: str = "",
    command: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> StepResult:
    """The same training under ``torchrun`` on this machine, with ``processes`` processes in all."""
    write_json_atomic(job_output_path, {"launcher": "local", "nproc_per_node": processes})
    if command:
        with atomic_directory(model.path) as staging:
            staged = str(staging)
            run_script(command, dataset.path, staged, hyperparameters or {}, dataset_info, processes, timeout_seconds)
            check_output(staging)
            metrics = read_metrics(staging)  # a malformed metrics.json fails before the Model appears
        return result(model.path, metrics)
    args = train_arguments(dataset.path, model.path, train, dataset_info, checkpoint_dir, pretrained_weights)
    first_step = run_torchrun(processes, library_training(args), timeout_seconds)
    log.info("torchrun with %d processes: first training step after %.1f s", processes, first_step)
    return result(model.path, None)


def job_arguments(
    dataset: ArtifactLocation,
    model: ArtifactLocation,
    train: TrainConfig,
    dataset_info: dict[str, Any],
    checkpoint_dir: str = "",
    pretrained_weights: str = "",
    command: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> list[str]:
    """The replicas' arguments, with the artifacts by URI: the library's training, or the script runner's."""
    if command:
        return runner_arguments(dataset.uri, model.uri, hyperparameters or {}, dataset_info, command)
    return train_arguments(dataset.uri, model.uri, train, dataset_info, checkpoint_dir, pretrained_weights)


def handle_writer(job_output_path: str, launcher: str) -> Callable[[JobHandle], None]:
    """What ``run_job`` calls once the job exists: the ``job`` output (launcher, kind, name, namespace, uid)."""
    return lambda handle: write_json_atomic(job_output_path, {"launcher": launcher, **handle.as_dict()})


def collect_model(model: ArtifactLocation, command: list[str] | None) -> StepResult:
    """What rank 0 wrote to the Model's URI, at the step's local output path too.

    KFP uploads this step's local output path when the step ends, so that path must hold the same files, or it
    would overwrite the model with nothing. A script's metrics are checked first: a malformed metrics.json leaves
    no Model behind.
    """
    with local_copy(model.uri) as written:
        metrics = read_metrics(written) if command else None
        if Path(written).resolve() != Path(model.path).resolve():
            publish(Path(written), model.path)
    return result(model.path, metrics)


def result(model_dir: str, metrics: dict[str, float] | None) -> StepResult:
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
