"""Opt-in: a real PyTorchJob on a real cluster with the Kubeflow Training Operator.

The training tests are skipped unless all of these are set (and the cluster serves pytorchjobs.kubeflow.org):
  KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE  namespace to run in (your kubeconfig's credentials are used)
  KFP_TORCH_LIFECYCLE_CLUSTER_IMAGE      a training image holding this library (see components/container_images.py)
  KFP_TORCH_LIFECYCLE_CLUSTER_DATASET    dataset URI the pods can read (gs://… or a path on a shared volume)
  KFP_TORCH_LIFECYCLE_CLUSTER_MODEL      model URI the pods can write (gs://…); a fresh one per run

The RBAC check needs only KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE (the profile namespace the pipeline runs in),
kubectl on PATH, and credentials that may impersonate the step's ServiceAccount:
  KFP_TORCH_LIFECYCLE_CLUSTER_SERVICE_ACCOUNT  the ServiceAccount that runs pipeline steps (default-editor)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import JobFailed
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.step import ArtifactLocation, default_job_config, run_step
from components.train.config import TrainConfig
from tests.support.kubectl_auth import can_i
from tests.support.launcher_traffic import launcher_permissions

pytestmark = pytest.mark.cluster
SETTINGS = {
    name: os.environ.get(f"KFP_TORCH_LIFECYCLE_CLUSTER_{name.upper()}", "")
    for name in ("namespace", "image", "dataset", "model")
}
SERVICE_ACCOUNT = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_SERVICE_ACCOUNT", "default-editor")


@pytest.fixture(scope="module")
def client():
    if not all(SETTINGS.values()):
        pytest.skip("set KFP_TORCH_LIFECYCLE_CLUSTER_{NAMESPACE,IMAGE,DATASET,MODEL} to run against a cluster")
    try:
        client = KubernetesJobClient.from_environment(PYTORCHJOB)
        client.custom.list_namespaced_custom_object("kubeflow.org", "v1", SETTINGS["namespace"], "pytorchjobs")
    except Exception as error:  # no kubeconfig, no operator, no access
        pytest.skip(f"no cluster with the Training Operator reachable: {error}")
    return client


def no_pods_left(client, name: str) -> bool:
    pods = client.core.list_namespaced_pod(
        SETTINGS["namespace"], label_selector=f"training.kubeflow.org/job-name={name}"
    )
    return all(p.metadata.deletion_timestamp for p in pods.items)


def test_real_pytorchjob_trains_and_cleans_up(client):
    with tempfile.TemporaryDirectory() as tmp:
        run_id = uuid.uuid4().hex
        result = run_step(
            launcher="kubeflow",
            dataset=ArtifactLocation(SETTINGS["dataset"], SETTINGS["dataset"]),
            model=ArtifactLocation(str(Path(tmp) / "model"), f"{SETTINGS['model'].rstrip('/')}/{run_id}"),
            job_output_path=str(Path(tmp) / "job"),
            train=TrainConfig(epochs=2, augment=False),
            job=default_job_config(SETTINGS["image"], 1, num_workers=2, cpu="1", memory="2Gi"),
            run_id=run_id,
            task_name="cluster-test",
            dataset_info={},
            namespace=SETTINGS["namespace"],
            timeout_seconds=1800,
            kube_client=client,
        )
        assert result.spec.training["world_size"] == 2
        handle = json.loads((Path(tmp) / "job").read_text())
    deadline = time.monotonic() + 300
    while not no_pods_left(client, handle["name"]) and time.monotonic() < deadline:
        time.sleep(5)
    assert no_pods_left(client, handle["name"]), "GPU/CPU pods outlived the step"


def test_real_failing_pytorchjob_fails_the_step(client):
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(JobFailed):
            run_step(
                launcher="kubeflow",
                dataset=ArtifactLocation(tmp, "/nonexistent/dataset"),
                model=ArtifactLocation(str(Path(tmp) / "model"), "/nonexistent/model"),
                job_output_path=str(Path(tmp) / "job"),
                train=TrainConfig(epochs=1),
                job=default_job_config(
                    SETTINGS["image"], 1, num_workers=1, cpu="1", memory="1Gi", restart_policy="Never"
                ),
                run_id=uuid.uuid4().hex,
                task_name="cluster-test-failure",
                dataset_info={},
                namespace=SETTINGS["namespace"],
                timeout_seconds=900,
                kube_client=client,
            )


def test_the_steps_service_account_may_do_what_the_launcher_does():
    """Every (verb, resource) the launcher sends (tests/support/launcher_traffic.py derives them) is allowed to the
    ServiceAccount the pipeline's steps run as. On "no":
    kubectl apply -n <namespace> -f components/distributed_train/rbac.yaml."""
    namespace, kubectl = SETTINGS["namespace"], shutil.which("kubectl")
    if not namespace or not kubectl:
        pytest.skip("set KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE and put kubectl on PATH to check the RBAC grants")
    user = f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    denied = []
    for group, resource, verb in sorted(launcher_permissions()):
        command = can_i(kubectl, verb, group, resource, user, namespace)
        answer = subprocess.run(command, capture_output=True, text=True, timeout=60)
        said = answer.stdout.strip()
        if said != "yes" and not said.startswith("no"):  # no answer at all: no cluster, or no right to impersonate
            pytest.fail(f"{' '.join(command)} failed (exit {answer.returncode}): {answer.stderr.strip()}")
        if said != "yes":
            denied.append(f"{verb} {resource}" + (f".{group}" if group else "") + f" ({said})")
    assert not denied, (
        f"{user} may not: {'; '.join(denied)}. Apply the Role: "
        f"kubectl apply -n {namespace} -f components/distributed_train/rbac.yaml"
    )
