"""The distributed pipeline's training step, without KFP: pick the kind of job the cluster runs, then run it.

``launcher`` is ``trainjob`` (Kubeflow Trainer v2, what current Kubeflow installs), ``pytorchjob`` (the Training
Operator v1; ``kubeflow`` is an alias of it), ``local``
(torchrun on this machine, what ``kfp.local`` uses) or ``auto``: the kind the cluster's API discovery lists, which
any authenticated user may read; TrainJob when it serves both. The choice is made at run time, in the step's own pod,
because the pipeline is compiled once and runs on clusters of either kind (and ``dsl.OneOf``, which would pass on
the Model of one of several branches, is not supported by ``kfp.local`` 2.17.0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from components.common.distributed_step import ArtifactLocation, StepResult, check_launcher
from components.common.kube.api import REQUEST_TIMEOUT_SECONDS, KubernetesApi, load_api_client
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.kinds import JobKind
from components.pytorchjob_train.kind import PYTORCHJOB
from components.train.config import TrainConfig
from components.trainjob_train.kind import TRAINJOB

log = logging.getLogger(__name__)

LAUNCHERS = ("auto", "trainjob", "pytorchjob", "local", "kubeflow")
ALIASES = {"kubeflow": "pytorchjob"}  # the PyTorchJob launcher's earlier name
KINDS: dict[str, JobKind] = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}  # auto's order of preference


class NoJobKind(RuntimeError):
    """The cluster serves neither kind of distributed job."""


def served(api: KubernetesApi, kind: JobKind) -> bool:
    """Whether the cluster's API discovery lists ``kind`` (``GET /apis/<group>/<version>``; 404: not served)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api.api_client)
    listed = api.call(
        "get",
        f"discovery of {kind.group}/{kind.version}",
        "(cluster scope)",
        lambda: custom.get_api_resources(kind.group, kind.version, _request_timeout=REQUEST_TIMEOUT_SECONDS),
        answers={404: None},
    )
    return listed is not None and any(resource.name == kind.plural for resource in listed.resources or [])


def resolve_launcher(launcher: str, api: Callable[[], KubernetesApi] = lambda: KubernetesApi(load_api_client())) -> str:
    """``trainjob``, ``pytorchjob`` or ``local``: ``launcher`` itself, its alias's target, or for ``auto`` the kind
    the cluster serves (``api`` makes the client that asks)."""
    check_launcher(launcher, LAUNCHERS)
    launcher = ALIASES.get(launcher, launcher)
    if launcher != "auto":
        return launcher
    client = api()
    found = [name for name, kind in KINDS.items() if served(client, kind)]
    if not found:
        raise NoJobKind(
            "launcher=auto: this cluster serves neither TrainJob (trainer.kubeflow.org/v1alpha1) nor PyTorchJob "
            "(kubeflow.org/v1). Install Kubeflow Trainer v2 (its manifests, which current Kubeflow installs, with "
            "the torch-distributed runtime) or the Training Operator v1 (kubeflow/trainer release-1.9), or run with "
            "launcher=local"
        )
    log.info("launcher=auto: the cluster serves %s; using %s", " and ".join(found), found[0])
    return found[0]


def run(
    launcher: str,
    dataset: ArtifactLocation,
    model: ArtifactLocation,
    job_output_path: str,
    train: TrainConfig,
    image: str,
    job: Mapping[str, Any],
    step: dict[str, Any],
    api: Callable[[], KubernetesApi] | None = None,
    clients: Callable[[JobKind], KubernetesJobClient] | None = None,
) -> StepResult:
    """Resolve ``launcher`` and run the step of that kind in ``image``: ``job`` holds the job's settings by the
    component's parameter names (``nproc_per_node``, ``num_workers``, and every field of ``PyTorchJobConfig`` or
    ``TrainJobConfig``: each kind takes those it has, a TrainJob's ``num_nodes`` is ``num_workers``), ``step`` the
    step's (run and task ids, timeouts, command, ...). ``api`` and ``clients`` make the API clients (by default from
    the pod's ServiceAccount, or the local kubeconfig)."""
    chosen = resolve_launcher(launcher, api) if api else resolve_launcher(launcher)
    if chosen == "pytorchjob":
        from components.pytorchjob_train import manifest as pytorchjob_manifest
        from components.pytorchjob_train import step as pytorchjob_step

        command = pytorchjob_manifest.training_command(job["nproc_per_node"])
        config = pytorchjob_manifest.PyTorchJobConfig.from_parameters(job, image=image, command=command)
        own = {key: value for key, value in step.items() if key != "queue_timeout_seconds"}
        client = clients(PYTORCHJOB) if clients else None
        return pytorchjob_step.run_step(
            "pytorchjob", dataset, model, job_output_path, train, config, kube_client=client, **own
        )
    from components.trainjob_train import manifest as trainjob_manifest
    from components.trainjob_train import step as trainjob_step

    command = trainjob_manifest.training_command()
    config = trainjob_manifest.TrainJobConfig.from_parameters(
        job, image=image, command=command, num_nodes=job["num_workers"]
    )
    client = clients(TRAINJOB) if clients and chosen == "trainjob" else None
    return trainjob_step.run_step(chosen, dataset, model, job_output_path, train, config, kube_client=client, **step)
