"""Opt-in: a real TrainJob on a real cluster with Kubeflow Trainer v2.

Skipped unless all of these are set (and the cluster serves trainjobs.trainer.kubeflow.org):
  KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE  namespace to run in (your kubeconfig's credentials are used)
  KFP_TORCH_LIFECYCLE_CLUSTER_IMAGE      a training image holding this library (see components/container_images.py)
  KFP_TORCH_LIFECYCLE_CLUSTER_DATASET    dataset URI the pods can read (gs://… or a path on a shared volume)
  KFP_TORCH_LIFECYCLE_CLUSTER_MODEL      model URI the pods can write (gs://…); a fresh one per run
and optionally:
  KFP_TORCH_LIFECYCLE_CLUSTER_TRAINER_RELEASE  the cluster's Trainer release, 2.3 (default) or 2.1
  KFP_TORCH_LIFECYCLE_CLUSTER_RUNTIME          the ClusterTrainingRuntime to use (default torch-distributed)

The RBAC grants (trainjobs included) are checked by tests/test_cluster_pytorchjob.py's can-i test, which needs only
the namespace and kubectl.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from components.common.kube.api import KubernetesApi, KubernetesApiError
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import JobFailed
from components.distributed_train.dispatch import resolve_launcher
from components.train.config import TrainConfig
from components.trainjob_train.kind import TRAINJOB
from components.trainjob_train.step import ArtifactLocation, default_job_config, run_step

pytestmark = pytest.mark.cluster
SETTINGS = {
    name: os.environ.get(f"KFP_TORCH_LIFECYCLE_CLUSTER_{name.upper()}", "")
    for name in ("namespace", "image", "dataset", "model")
}
RELEASE = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_TRAINER_RELEASE", "2.3")
RUNTIME = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_RUNTIME", "torch-distributed")


@pytest.fixture(scope="module")
def client():
    if not all(SETTINGS.values()):
        pytest.skip("set KFP_TORCH_LIFECYCLE_CLUSTER_{NAMESPACE,IMAGE,DATASET,MODEL} to run against a cluster")
    try:
        client = KubernetesJobClient.from_environment(TRAINJOB)
        client.custom.list_namespaced_custom_object(
            TRAINJOB.group, TRAINJOB.version, SETTINGS["namespace"], "trainjobs"
        )
    except Exception as error:  # no kubeconfig, no Trainer, no access
        pytest.skip(f"no cluster with Kubeflow Trainer v2 reachable: {error}")
    return client


def step(client, tmp: str, run_id: str, **overrides):
    settings = dict(
        launcher="trainjob",
        dataset=ArtifactLocation(SETTINGS["dataset"], SETTINGS["dataset"]),
        model=ArtifactLocation(str(Path(tmp) / "model"), f"{SETTINGS['model'].rstrip('/')}/{run_id}"),
        job_output_path=str(Path(tmp) / "job"),
        train=TrainConfig(epochs=2, augment=False),
        job=default_job_config(
            SETTINGS["image"], 1, num_nodes=2, cpu="1", memory="2Gi", trainer_release=RELEASE, runtime=RUNTIME
        ),  # fmt: skip
        run_id=run_id,
        task_name="cluster-test",
        dataset_info={},
        namespace=SETTINGS["namespace"],
        timeout_seconds=1800,
        kube_client=client,
    )
    return run_step(**(settings | overrides))


def nothing_left(client, name: str) -> bool:
    pods = client.core.list_namespaced_pod(
        SETTINGS["namespace"], label_selector=f"jobset.sigs.k8s.io/jobset-name={name}"
    )
    return client.get(name, SETTINGS["namespace"]) is None and all(p.metadata.deletion_timestamp for p in pods.items)


def test_auto_finds_trainer(client):
    assert resolve_launcher("auto", lambda: KubernetesApi(client.api_client)) == "trainjob"


def test_real_trainjob_trains_on_two_nodes_and_leaves_nothing_behind(client):
    with tempfile.TemporaryDirectory() as tmp:
        result = step(client, tmp, uuid.uuid4().hex)
        assert result.spec.training["world_size"] == 2
        handle = json.loads((Path(tmp) / "job").read_text())
    deadline = time.monotonic() + 300
    while not nothing_left(client, handle["name"]) and time.monotonic() < deadline:
        time.sleep(5)
    assert nothing_left(client, handle["name"]), "the TrainJob or its pods outlived the step (TrainJob has no TTL)"


def test_real_failing_trainjob_fails_the_step(client):
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(JobFailed, match="failed: "):
            step(
                client,
                tmp,
                uuid.uuid4().hex,
                dataset=ArtifactLocation(tmp, "/nonexistent/dataset"),
                job=default_job_config(
                    SETTINGS["image"], 1, num_nodes=1, cpu="1", memory="1Gi", trainer_release=RELEASE, runtime=RUNTIME
                ),  # fmt: skip
                timeout_seconds=1200,
            )


def test_a_runtime_the_cluster_lacks_is_named(client):
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises((KubernetesApiError, JobFailed), match="'no-such-runtime' is missing or unsupported"):
            step(
                client,
                tmp,
                uuid.uuid4().hex,
                job=default_job_config(
                    SETTINGS["image"], 1, num_nodes=1, trainer_release=RELEASE, runtime="no-such-runtime"
                ),  # fmt: skip
                scheduling_timeout_seconds=120,
            )
