"""The trainjob_train step, without KFP: launch distributed training as a Kubeflow Trainer v2 TrainJob, collect its
model.

``launcher="trainjob"`` creates a TrainJob (for the cluster's Trainer release) whose node pods get the artifacts'
URIs; ``launcher="local"`` runs the same under ``torchrun`` on this machine with the same number of processes. The
parts every distributed step shares are ``components.common.distributed_step``'s; the lifecycle (create or re-attach,
wait, report, delete on every exit) is ``components.common.kube.runner``'s.
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
    check_launcher,
    check_seconds,
    collect_model,
    handle_writer,
    job_arguments,
    prepare,
    run_local,
)
from components.common.kube.api import current_namespace
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import job_name, run_job
from components.train.config import TrainConfig
from components.trainjob_train.kind import TRAINJOB
from components.trainjob_train.manifest import TrainJobConfig, build_manifest, training_command

LAUNCHERS = ("trainjob", "local")


def run_step(
    launcher: str,
    dataset: ArtifactLocation,
    model: ArtifactLocation,
    job_output_path: str,
    train: TrainConfig,
    job: TrainJobConfig,
    run_id: str,
    task_name: str,
    dataset_info: dict[str, Any],
    namespace: str = "",
    checkpoint_dir: str = "",
    timeout_seconds: float = 86400,
    kube_client: KubernetesJobClient | None = None,
    task_id: str = "",
    scheduling_timeout_seconds: float = 600,
    queue_timeout_seconds: float = 21600,
    poll_seconds: float = 5.0,
    command: list[str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    pretrained_weights: str = "",
) -> StepResult:
    """Run distributed training to completion; return the model's spec (and a custom script's metrics).

    The TrainJob's name derives from ``run_id``, ``task_name`` and ``task_id`` (unique per ParallelFor iteration,
    stable across retries). ``scheduling_timeout_seconds`` bounds the wait for its pods, ``queue_timeout_seconds``
    the time it may stay suspended in a Kueue queue, ``timeout_seconds`` the whole step.
    """
    check_launcher(launcher, LAUNCHERS)
    command, hyperparameters = prepare(train, command, hyperparameters)
    if command:
        job = dataclasses.replace(job, command=SCRIPT_RUNNER)
    job.validate()
    check_seconds(
        timeout_seconds=timeout_seconds,
        scheduling_timeout_seconds=scheduling_timeout_seconds,
        queue_timeout_seconds=queue_timeout_seconds,
    )
    settings = dict(dataset_info=dataset_info, checkpoint_dir=checkpoint_dir, pretrained_weights=pretrained_weights)
    settings |= dict(command=command, hyperparameters=hyperparameters)

    if launcher == "local":
        processes = job.num_nodes * job.nproc_per_node
        return run_local(processes, dataset, model, job_output_path, train, timeout_seconds=timeout_seconds, **settings)

    job = with_deadline_backstop(job, timeout_seconds)
    args = job_arguments(dataset, model, train, **settings)
    manifest = build_manifest(job, job_name(run_id, task_name, task_id), namespace or current_namespace(), args)
    run_job(
        kube_client or KubernetesJobClient.from_environment(TRAINJOB),
        manifest,
        timeout_seconds=timeout_seconds,
        on_created=handle_writer(job_output_path, launcher),
        poll_seconds=poll_seconds,
        scheduling_timeout_seconds=scheduling_timeout_seconds,
        queue_timeout_seconds=queue_timeout_seconds,
    )
    return collect_model(model, command)


def with_deadline_backstop(job: TrainJobConfig, timeout_seconds: float) -> TrainJobConfig:
    """The job with active_deadline_seconds = timeout_seconds + DEADLINE_MARGIN_SECONDS unless the user set one:
    the TrainJob's activeDeadlineSeconds (v2.2 on), or the node command's wall-clock deadline (v2.1). TrainJob has no
    TTL (kubeflow/trainer#2899): the step's cleanup deletes it, this only stops its pods if the step cannot."""
    if job.active_deadline_seconds:
        return job
    return dataclasses.replace(job, active_deadline_seconds=math.ceil(timeout_seconds) + DEADLINE_MARGIN_SECONDS)


def default_job_config(image: str, nproc_per_node: int, **settings: Any) -> TrainJobConfig:
    return TrainJobConfig(image=image, command=training_command(), nproc_per_node=nproc_per_node, **settings)
