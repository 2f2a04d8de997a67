"""The requests the distributed training launcher sends to a Kubernetes API server, as its RBAC authorizer checks
them, for PyTorchJobs and TrainJobs.

The launcher (``components/common/kube/``) runs against the fake API server with the Training Operator's
controller and with Kubeflow Trainer's, through scenarios that reach every Kubernetes API method its source calls;
every request is recorded with the permission it needs. ``tests/test_rbac.py`` checks ``rbac.yaml`` and the README
against them, and the opt-in cluster tests ask a real cluster whether the step's ServiceAccount has them.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.common.kube import api, events, jobs, logs, pods, runner, signals
from components.common.kube.api import RetryPolicy
from components.common.kube.jobs import KubernetesJobClient
from components.common.kube.runner import JobFailed, JobNotStarted, run_job
from components.pytorchjob_train.kind import PYTORCHJOB
from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from components.trainjob_train import manifest as trainjob_manifest
from components.trainjob_train.kind import TRAINJOB
from tests.support.fake_jobs import Step
from tests.support.fake_kube import FakeKube, Request, unschedulable
from tests.support.fake_pytorchjob import TrainingOperator
from tests.support.fake_trainjob import KubeflowTrainer

NAMESPACE = "team-a"
FAST_RETRY = RetryPolicy(budget_seconds=5, first_delay_seconds=0.01, max_delay_seconds=0.05)

Permission = tuple[str, str, str]  # (API group, resource or resource/subresource, verb), as a Role's rule names it


class _Recorded:
    """An API object of the Kubernetes client (CoreV1Api, ...) that notes each of its methods the launcher uses."""

    def __init__(self, attribute: str, wrapped, used: set[tuple[str, str]]):
        self._attribute, self._api, self._used = attribute, wrapped, used

    def __getattr__(self, name: str):
        value = getattr(self._api, name)
        if callable(value):
            self._used.add((self._attribute, name))
        return value


def launcher_nodes() -> list[ast.AST]:
    """Every node of the launcher's modules: the step's flow, its API client, its log follower, its reports."""
    modules = (api, events, jobs, logs, pods, runner, signals)
    return [node for module in modules for node in ast.walk(ast.parse(Path(module.__file__).read_text()))]


def api_attributes() -> dict[str, str]:
    """The launcher's API objects, from its source: {attribute: class}, e.g. {"core": "CoreV1Api"}."""
    found = {}
    for node in launcher_nodes():
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr.endswith("Api")
        ):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    found[target.attr] = node.value.func.attr
    return found


def api_methods_in_source() -> set[tuple[str, str]]:
    """Every (API object, method) the launcher's source names, e.g. ("core", "list_namespaced_pod")."""
    attributes = api_attributes()
    return {
        (node.value.attr, node.attr)
        for node in launcher_nodes()
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in attributes
    }


def _manifest(kind=PYTORCHJOB) -> dict:
    if kind is TRAINJOB:
        config = trainjob_manifest.TrainJobConfig(image="registry.example.com/train:0.1.0",
                                                  command=trainjob_manifest.training_command())  # fmt: skip
        return trainjob_manifest.build_manifest(config, "train-abc123", NAMESPACE, ["--epochs", "1"])
    config = PyTorchJobConfig(image="registry.example.com/train:0.1.0", command=training_command(1))
    return build_manifest(config, "train-abc123", NAMESPACE, ["--epochs", "1"])


def _kind(controller) -> object:
    return TRAINJOB if isinstance(controller, KubeflowTrainer) else PYTORCHJOB


def _launch(kube: FakeKube, used: set[tuple[str, str]], kind=PYTORCHJOB, **kwargs) -> list[str]:
    job_client = KubernetesJobClient(kube.api_client(), kind, retry=FAST_RETRY)
    for attribute in api_attributes():
        setattr(job_client, attribute, _Recorded(attribute, getattr(job_client, attribute), used))
    lines: list[str] = []
    run_job(job_client, _manifest(kind), timeout_seconds=30, poll_seconds=0.05, echo=lines.append, **kwargs)
    return lines


def _succeeds(kube: FakeKube, operator, used: set) -> None:
    lines = _launch(kube, used, _kind(operator))
    assert any(line.endswith("] training finished") for line in lines)  # the log was followed


def _replaces_a_failed_job_of_an_earlier_attempt(kube: FakeKube, operator, used: set) -> None:
    operator.script = [Step(0, operator.initial), Step(0, "Failed", "OOMKilled", "the earlier attempt's failure")]
    KubernetesJobClient(kube.api_client(), _kind(operator)).create(_manifest(_kind(operator)))
    kube.requests.clear()  # the earlier attempt's requests are not the launcher's
    operator.script = [Step(0, operator.initial), Step(0.1, "Running"), Step(0.3, operator.finished[0])]
    lines = _launch(kube, used, _kind(operator))
    assert any("of an earlier attempt Failed" in line for line in lines)


def _reports_pods_that_never_start(kube: FakeKube, operator, used: set) -> None:
    operator.script = [Step(0, operator.initial)]
    operator.pending_pods = {"master": unschedulable(), "node": unschedulable()}
    with pytest.raises(JobNotStarted, match="Unschedulable"):  # the pods were listed for their reasons
        _launch(kube, used, _kind(operator), scheduling_timeout_seconds=0.3)


def _reports_a_failure_with_its_events(kube: FakeKube, operator, used: set) -> None:
    operator.script = [Step(0, operator.initial), Step(0.1, "Running"), Step(0.3, "Failed")]
    with pytest.raises(JobFailed):  # the Events about it were listed for the message
        _launch(kube, used, _kind(operator))


SCENARIOS = (
    _succeeds,
    _replaces_a_failed_job_of_an_earlier_attempt,
    _reports_pods_that_never_start,
    _reports_a_failure_with_its_events,
)
CONTROLLERS = (TrainingOperator, KubeflowTrainer)


@dataclass(frozen=True)
class Traffic:
    requests: tuple[Request, ...]  # every request the launcher sent, over all scenarios
    methods: frozenset[tuple[str, str]]  # the (API object, method) pairs it used


@functools.cache
def launcher_traffic() -> Traffic:
    requests: list[Request] = []
    used: set[tuple[str, str]] = set()
    for controller, scenario in [(controller, scenario) for controller in CONTROLLERS for scenario in SCENARIOS]:
        operator = controller()
        kube = FakeKube([operator]).start()
        try:
            scenario(kube, operator, used)
        except Exception as error:  # e.g. a new call the fake API server does not serve (404): teach it the call
            sent = sorted({request.access.rule for request in kube.requests if request.access})
            raise AssertionError(f"{scenario.__name__} failed against the fake API server; it sent {sent}") from error
        finally:
            kube.stop()
        requests += kube.requests
    return Traffic(tuple(requests), frozenset(used))


def launcher_permissions() -> frozenset[Permission]:
    """What the launcher needs: each request it sends, as the RBAC authorizer checks it."""
    return frozenset(request.access.rule for request in launcher_traffic().requests if request.access)
