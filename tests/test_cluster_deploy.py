"""Opt-in: the deploy step on a real cluster, with both cluster targets: deploy, verify, roll back.

Skipped unless these are set (your kubeconfig's credentials are used):
  KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE      the namespace to deploy to (it must allow Services, Deployments, HPAs)
  KFP_TORCH_LIFECYCLE_CLUSTER_SERVING_IMAGE  a bento image by digest (containerize's output) the nodes can pull
Optional:
  KFP_TORCH_LIFECYCLE_CLUSTER_KSERVE_VERSION  the cluster's KServe release (default 0.20); the kserve target is
                                              tried only where the cluster serves InferenceServices
  KFP_TORCH_LIFECYCLE_CLUSTER_KSERVE_MODE     standard (default) or knative
  KFP_TORCH_LIFECYCLE_CLUSTER_SERVICE_ACCOUNT the ServiceAccount pipeline steps run as (default-editor), for the
                                              RBAC check (needs kubectl and the right to impersonate it)

The verification asks the service's /readyz and /model_info through the API server's service proxy (the test runs
outside the cluster); the rollback deploys the same repository at a digest that does not exist, which its pods
cannot pull.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from components.deploy.deploy import DeployFailed, run_deploy
from components.deploy.deployment_target import DeploymentTarget
from components.deploy.kserve_target import KServeTarget
from components.deploy.kube_client import INFERENCE_SERVICES, DeployApi
from components.deploy.target import IMAGE_BY_DIGEST, DeployRequest, ServiceAddress, lineage_labels
from tests.support.deploy_cluster import deploy_permissions
from tests.support.kubectl_auth import can_i

pytestmark = pytest.mark.cluster
NAMESPACE = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE", "")
IMAGE = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_SERVING_IMAGE", "")
KSERVE_VERSION = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_KSERVE_VERSION", "0.20")
KSERVE_MODE = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_KSERVE_MODE", "standard")
SERVICE_ACCOUNT = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_SERVICE_ACCOUNT", "default-editor")


@dataclass
class Answered:
    passed: bool
    text: str

    def summary(self) -> str:
        return self.text


@pytest.fixture(scope="module")
def api():
    if not NAMESPACE or not IMAGE:
        pytest.skip("set KFP_TORCH_LIFECYCLE_CLUSTER_{NAMESPACE,SERVING_IMAGE} to deploy to a cluster")
    assert IMAGE_BY_DIGEST.match(IMAGE), "KFP_TORCH_LIFECYCLE_CLUSTER_SERVING_IMAGE must be pinned by digest"
    try:
        return DeployApi.from_environment()
    except Exception as error:
        pytest.skip(f"no cluster reachable: {error}")


def through_proxy(address: ServiceAddress) -> str:
    """The service's address as the API server's proxy path (the test is outside the cluster)."""
    return f"{address.namespace}|{address.name}:{address.port}"


def verify_through_proxy(api: DeployApi):
    def verify(url: str) -> Answered:
        namespace, service = url.split("|")
        ready = api.core.connect_get_namespaced_service_proxy_with_path(service, namespace, "readyz")
        return Answered(True, f"/readyz answered {str(ready)[:40]!r}")

    return verify


def unpullable() -> str:
    repository = IMAGE_BY_DIGEST.match(IMAGE)["repository"]
    return f"{repository}@sha256:{'0' * 64}"


def deploy_and_roll_back(target, base: DeployRequest, api: DeployApi) -> None:
    try:
        first = run_deploy(target, base, verify_through_proxy(api), deadline_seconds=900)
        assert first.verification.passed and first.image == IMAGE
        again = run_deploy(target, base, verify_through_proxy(api), deadline_seconds=900)
        assert not again.changed
        broken = DeployRequest(**{**base.__dict__, "image": unpullable()})
        with pytest.raises(DeployFailed, match="ImagePullBackOff|ErrImagePull|Rolled back"):
            run_deploy(target, broken, verify_through_proxy(api), deadline_seconds=180)
        assert target.current().image == IMAGE
    finally:
        target.remove()


def test_deployment_target_deploys_verifies_and_rolls_back(api):
    name = f"kfp-deploy-{uuid.uuid4().hex[:8]}"
    target = DeploymentTarget(api, NAMESPACE, name, resolve_url=through_proxy)
    base = DeployRequest("deployment", name, NAMESPACE, IMAGE, labels=lineage_labels("cluster-test", "", "test"),
                         min_replicas=1, max_replicas=2, cpu="250m", memory="512Mi", memory_limit="1Gi")  # fmt: skip
    deploy_and_roll_back(target, base, api)


def test_kserve_target_deploys_verifies_and_rolls_back(api):
    try:
        api.custom.list_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices")
    except Exception as error:
        pytest.skip(f"this cluster serves no {INFERENCE_SERVICES.resource}: {error}")
    name = f"kfp-deploy-{uuid.uuid4().hex[:8]}"
    target = KServeTarget(api, NAMESPACE, name, resolve_url=through_proxy)
    metric = "concurrency" if KSERVE_MODE == "knative" else "cpu"
    base = DeployRequest("kserve", name, NAMESPACE, IMAGE, labels=lineage_labels("cluster-test", "", "test"),
                         min_replicas=1, max_replicas=2, cpu="250m", memory="512Mi", memory_limit="1Gi",
                         kserve_mode=KSERVE_MODE, kserve_version=KSERVE_VERSION, scale_metric=metric)  # fmt: skip
    deploy_and_roll_back(target, base, api)


def test_the_steps_service_account_may_do_what_the_deploy_step_does():
    """Every (verb, resource) the step sends (tests/support/deploy_cluster.py derives them) is allowed to the
    pipeline's ServiceAccount. On "no": kubectl apply -n <namespace> -f components/deploy/rbac.yaml."""
    kubectl = shutil.which("kubectl")
    if not NAMESPACE or not kubectl:
        pytest.skip("set KFP_TORCH_LIFECYCLE_CLUSTER_NAMESPACE and put kubectl on PATH to check the RBAC grants")
    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    denied = []
    for group, resource, verb in sorted(deploy_permissions()):
        command = can_i(kubectl, verb, group, resource, user, NAMESPACE)
        answer = subprocess.run(command, capture_output=True, text=True, timeout=60)
        said = answer.stdout.strip()
        if said != "yes" and not said.startswith("no"):
            pytest.fail(f"{' '.join(command)} failed (exit {answer.returncode}): {answer.stderr.strip()}")
        if said != "yes":
            denied.append(f"{verb} {resource}" + (f".{group}" if group else ""))
    assert not denied, f"{user} may not: {'; '.join(denied)}. Apply components/deploy/rbac.yaml to {NAMESPACE}"
