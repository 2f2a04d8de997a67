"""A fake cluster for the deploy step: the fake API server with the Deployment, Service, HorizontalPodAutoscaler and
KServe controllers, images that serve, crash or cannot be pulled, and the requests the step sends, as the RBAC
authorizer checks them (``deploy_permissions``, for ``tests/test_deploy_rbac.py`` and the opt-in cluster test).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

from components.common.kube.api import RetryPolicy
from components.deploy.deploy import DeployFailed, run_deploy, run_promotion
from components.deploy.deployment_target import DeploymentTarget
from components.deploy.kserve_target import KServeTarget
from components.deploy.kube_client import DeployApi
from components.deploy.target import DeployRequest, UrlResolver, in_cluster_url, lineage_labels
from tests.support.fake_apps import Workloads, apps_controllers
from tests.support.fake_kserve import KServeController
from tests.support.fake_kube import FakeKube

NAMESPACE = "team-a"
NAME = "classifier"
FAST_RETRY = RetryPolicy(budget_seconds=3, first_delay_seconds=0.01, max_delay_seconds=0.05)
REPOSITORY = "registry.example.com/ml/image-classifier"


def image(letter: str) -> str:
    return f"{REPOSITORY}@sha256:{letter * 64}"


GOOD, NEWER, UNPULLABLE, CRASHING, UNSCHEDULABLE = (image(c) for c in "acbde")
CRASH_LOG = ["Traceback (most recent call last):", "RuntimeError: model.onnx: expected input 1x8x8, got 1x28x28"]


@dataclass
class Verified:
    """A verification's outcome as run_deploy reads it (``components.deploy.verification.Verification``)."""

    passed: bool
    text: str = "64 images, 64 agreed"

    def summary(self) -> str:
        return self.text


@dataclass
class FakeCluster:
    kserve_release: str = "0.20.0"
    workloads: Workloads = field(default_factory=Workloads)

    def __post_init__(self) -> None:
        for serving in (GOOD, NEWER):
            self.workloads.serves(serving)
        self.workloads.crashes(CRASHING, CRASH_LOG)
        self.workloads.unschedulable(UNSCHEDULABLE)
        controllers = apps_controllers(self.workloads)
        self.deployments, self.services, self.autoscalers = controllers
        self.kserve = KServeController(self.workloads, self.deployments, release=self.kserve_release)
        self.kube = FakeKube([*controllers, self.kserve])

    def __enter__(self) -> FakeCluster:
        self.kube.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kube.stop()

    def api(self) -> DeployApi:
        return DeployApi(self.kube.api_client(), FAST_RETRY)

    def target(self, kind: str, resolve_url: UrlResolver = in_cluster_url, echo=lambda line: None):
        cls = DeploymentTarget if kind == "deployment" else KServeTarget
        return cls(self.api(), NAMESPACE, NAME, resolve_url=resolve_url, poll_seconds=0.02, echo=echo)


def request(target: str, image_: str = GOOD, run: str = "run-1", **settings) -> DeployRequest:
    knative = settings.get("kserve_mode") == "knative"
    defaults = {"min_replicas": 2, "scale_metric": "concurrency" if knative else "cpu"}
    return DeployRequest(
        target=target,
        name=NAME,
        namespace=NAMESPACE,
        image=image_,
        labels=lineage_labels("image-classifier:v7gq2", "3f" * 20, run),
        **{**defaults, **settings},
    )


def passes(url: str) -> Verified:
    return Verified(True)


# --- the requests the step sends -----------------------------------------------------------------------------------

TARGET_SETTINGS = {
    "deployment": {},
    "kserve-standard": {"kserve_mode": "standard"},
    "kserve-knative": {"kserve_mode": "knative"},
}


def _scenarios(cluster: FakeCluster, kind: str, settings: dict) -> None:
    """Every call the step makes: a first deployment, a no-op, a failed rollout diagnosed and rolled back, a canary
    promoted and one rolled back (Knative and deployment), a failed first deployment removed."""
    target_kind = "deployment" if kind == "deployment" else "kserve"
    target = cluster.target(target_kind)
    first = request(target_kind, GOOD, **settings)
    run_deploy(target, first, passes, deadline_seconds=10, echo=_quiet)
    run_deploy(target, first, passes, deadline_seconds=10, echo=_quiet)
    broken = [dataclasses.replace(first, image=image_) for image_ in (CRASHING, UNPULLABLE)]
    broken.append(dataclasses.replace(first, service_account="no-such-account"))  # no pods: the events say why
    for failing in broken:
        try:
            run_deploy(target, failing, passes, deadline_seconds=0.6, echo=_quiet)
        except DeployFailed:
            pass
    if kind != "kserve-standard":
        canary = dataclasses.replace(first, image=NEWER, canary_percent=25)
        run_deploy(target, canary, passes, deadline_seconds=10, echo=_quiet)
        run_promotion(target, canary, passes, deadline_seconds=10, echo=_quiet)
        try:
            run_deploy(target, dataclasses.replace(first, canary_percent=25), lambda url: Verified(False, "0 agreed"),
                       deadline_seconds=10, echo=_quiet)  # fmt: skip
        except DeployFailed:
            pass
    target.remove()
    try:
        run_deploy(target, dataclasses.replace(first, image=CRASHING), passes, deadline_seconds=0.6, echo=_quiet)
    except DeployFailed:
        pass


def _quiet(line: str) -> None:
    pass


@functools.cache
def deploy_traffic() -> tuple:
    """Every request the step sent, over all targets and scenarios (``Request``s of the fake API server)."""
    requests = []
    for kind, settings in TARGET_SETTINGS.items():
        with FakeCluster() as cluster:
            _scenarios(cluster, kind, settings)
            requests += cluster.kube.requests
    return tuple(requests)


def deploy_permissions() -> frozenset[tuple[str, str, str]]:
    """(API group, resource, verb) for each request the step sends, as a Role's rules name them."""
    return frozenset(request.access.rule for request in deploy_traffic() if request.access)
