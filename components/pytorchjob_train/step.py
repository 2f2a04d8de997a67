"""The pytorchjob_train step, without KFP: launch distributed training, collect its model.

``launcher="kubeflow"`` creates a PyTorchJob whose replicas run the train CLI
with the artifacts' URIs: every rank reads the dataset, rank 0 writes the
model straight to the output ``Model`` URI. ``launcher="local"`` runs the same
CLI under ``torchrun`` on this machine with the same number of processes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.artifacts import write_json_atomic
from components.common.model import ModelSpec, load_spec
from components.common.storage import is_remote, local_copy, publish
from components.pytorchjob_train.launcher import KubernetesJobClient, current_namespace, job_name, run_job
from components.pytorchjob_train.local_launcher import run_torchrun
from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from components.train.trainer import TrainConfig

log = logging.getLogger(__name__)

LAUNCHERS = ("kubeflow", "local")


@dataclass
class ArtifactLocation:
    path: str  # local path KFP gives this step
    uri: str  # what other pods can reach (gs://…, or a shared path)


def train_arguments(dataset: str, model: str, train: TrainConfig, dataset_info: dict, checkpoint_dir: str) -> list[str]:
    args = [
        "--dataset", dataset,
        "--model", model,
        "--dataset-info", json.dumps(dataset_info, sort_keys=True),
        "--epochs", str(train.epochs),
        "--batch-size", str(train.batch_size),
        "--learning-rate", repr(train.learning_rate),
        "--seed", str(train.seed),
        "--validation-fraction", repr(train.validation_fraction),
        "--architecture", train.architecture,
    ]  # fmt: skip
    if checkpoint_dir:
        args += ["--checkpoint-dir", checkpoint_dir]
    return args


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
    poll_seconds: float = 5.0,
) -> ModelSpec:
    """Run distributed training to completion; return the trained model's spec."""
    # Everything that can be checked is checked before a pod or process starts.
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    train.validate()
    job.validate()
    if not isinstance(timeout_seconds, (int, float)) or timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")

    if launcher == "local":
        processes = job.num_workers * job.nproc_per_node
        write_json_atomic(job_output_path, {"launcher": "local", "nproc_per_node": processes})
        args = train_arguments(dataset.path, model.path, train, dataset_info, checkpoint_dir)
        first_step = run_torchrun(processes, args, timeout_seconds)
        log.info("torchrun with %d processes: first training step after %.1f s", processes, first_step)
        return load_spec(model.path)

    name = job_name(run_id, task_name)
    manifest = build_manifest(
        job,
        name,
        namespace or current_namespace(),
        train_arguments(dataset.uri, model.uri, train, dataset_info, checkpoint_dir),
    )
    client = kube_client or KubernetesJobClient.from_environment()
    run_job(
        client,
        manifest,
        timeout_seconds=timeout_seconds,
        on_created=lambda handle: write_json_atomic(job_output_path, {"launcher": "kubeflow", **handle.as_dict()}),
        poll_seconds=poll_seconds,
    )
    # Rank 0 wrote the model to its URI. KFP uploads this step's local output path when the step
    # ends, so that path must hold the same files, or it would overwrite the model with nothing.
    if is_remote(model.uri):
        with local_copy(model.uri) as fetched:
            publish(fetched, model.path)
    elif Path(model.uri).resolve() != Path(model.path).resolve():
        publish(Path(model.uri), model.path)
    return load_spec(model.path)


def default_job_config(image: str, nproc_per_node: int, **settings: Any) -> PyTorchJobConfig:
    return PyTorchJobConfig(
        image=image, command=training_command(nproc_per_node), nproc_per_node=nproc_per_node, **settings
    )
