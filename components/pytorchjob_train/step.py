"""The pytorchjob_train step, without KFP: launch distributed training as a PyTorchJob, collect its model.

``launcher="pytorchjob"`` (or its alias ``"kubeflow"``) creates a
PyTorchJob whose replicas get the artifacts' URIs; ``launcher="local"`` runs the same under ``torchrun`` on this
machine with the same number of processes. What the two share with every distributed step (the checks, the
local run, the replicas' arguments, the collection of the model) is ``components.common.distributed_step``'s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from components.common.distributed_step import (
    DEADLINE_MARGIN_SECONDS,
    SCRIPT_RUNNER,
    ArtifactLocation,
    StepResult,
    check_command,
    check_launcher,
    check_seconds,
    collect_model,
    handle_writer,
    job_arguments,
    prepare,
    run_local,
    script_hyperparameters,
    train_arguments,
)
from components.common.kube.api import current_namespace
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import job_name, run_job
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from components.train.config import TrainConfig

__all__ = [
    "LAUNCHERS",
    "ArtifactLocation",
    "StepResult",
    "check_command",
    "default_job_config",
    "run_step",
    "script_hyperparameters",
    "train_arguments",
    "with_deadline_backstop",
]

# "kubeflow" is the PyTorchJob launcher's earlier name: runs and schedules made before TrainJob came pass it.
LAUNCHERS = ("pytorchjob", "kubeflow", "local")


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

    With the PyTorchJob launcher the job's name derives from ``run_id``, ``task_name`` and ``task_id`` (unique per
    ParallelFor iteration, stable across retries); ``scheduling_timeout_seconds`` bounds the wait for its pods.
    """
    # Everything that can be checked is checked before a pod or process starts.
    check_launcher(launcher, LAUNCHERS)
    command, hyperparameters = prepare(train, command, hyperparameters)
    if command:
        job = dataclasses.replace(job, command=SCRIPT_RUNNER)
    job.validate()
    check_seconds(timeout_seconds=timeout_seconds, scheduling_timeout_seconds=scheduling_timeout_seconds)
    settings = dict(dataset_info=dataset_info, checkpoint_dir=checkpoint_dir, pretrained_weights=pretrained_weights)
    settings |= dict(command=command, hyperparameters=hyperparameters)

    if launcher == "local":
        processes = job.num_workers * job.nproc_per_node
        return run_local(processes, dataset, model, job_output_path, train, timeout_seconds=timeout_seconds, **settings)

    job = with_deadline_backstop(job, timeout_seconds)
    args = job_arguments(dataset, model, train, **settings)
    manifest = build_manifest(job, job_name(run_id, task_name, task_id), namespace or current_namespace(), args)
    run_job(
        kube_client or KubernetesJobClient.from_environment(PYTORCHJOB),
        manifest,
        timeout_seconds=timeout_seconds,
        on_created=handle_writer(job_output_path, launcher),
        poll_seconds=poll_seconds,
        scheduling_timeout_seconds=scheduling_timeout_seconds,
    )
    return collect_model(model, command)


def with_deadline_backstop(job: PyTorchJobConfig, timeout_seconds: float) -> PyTorchJobConfig:
    """The job with activeDeadlineSeconds = timeout_seconds + DEADLINE_MARGIN_SECONDS unless the user set one."""
    if job.active_deadline_seconds:
        return job
    return dataclasses.replace(job, active_deadline_seconds=math.ceil(timeout_seconds) + DEADLINE_MARGIN_SECONDS)


def default_job_config(image: str, nproc_per_node: int, **settings: Any) -> PyTorchJobConfig:
    return PyTorchJobConfig(
        image=image, command=training_command(nproc_per_node), nproc_per_node=nproc_per_node, **settings
    )
