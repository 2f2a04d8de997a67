"""The fake Kubernetes API server (tests/support/fake_kube.py) answers the official client as the real one does."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, ProtocolError

from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from tests.support.fake_kube import RESET, FakeKube, Fault, Step, unschedulable

PATH = {"group": "kubeflow.org", "version": "v1", "namespace": "team-a", "plural": "pytorchjobs"}
JOB = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs/train-abc123"


@pytest.fixture
def kube():
    server = FakeKube(deletion_seconds=0.3).start()
    yield server
    server.stop()


@pytest.fixture
def apis(kube):
    api_client = kube.api_client()
    return client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)


def create(custom, workers=2, name="train-abc123"):
    config = PyTorchJobConfig(image="img:1", command=training_command(1), num_workers=workers)
    return custom.create_namespaced_custom_object(body=build_manifest(config, name, "team-a", []), **PATH)


def pod_names(core, selector="training.kubeflow.org/job-name=train-abc123"):
    return sorted(pod.metadata.name for pod in core.list_namespaced_pod("team-a", label_selector=selector).items)


def status_of(call) -> int:
    with pytest.raises(ApiException) as raised:
        call()
    return raised.value.status


# --- deletion ---------------------------------------------------------------------------------------------------


def test_a_foreground_delete_lingers_with_a_deletion_timestamp_then_the_job_is_gone(apis):
    custom, core = apis
    create(custom)
    deleting = custom.delete_namespaced_custom_object(
        name="train-abc123", body={"propagationPolicy": "Foreground"}, **PATH
    )
    assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
    job = custom.get_namespaced_custom_object(name="train-abc123", **PATH)
    assert job["metadata"]["deletionTimestamp"]
    assert status_of(lambda: create(custom)) == 409  # the name is taken until it is gone
    assert all(p.metadata.deletion_timestamp for p in core.list_namespaced_pod("team-a").items)
    time.sleep(0.35)
    assert status_of(lambda: custom.get_namespaced_custom_object(name="train-abc123", **PATH)) == 404
    assert pod_names(core) == []
    assert create(custom)["metadata"]["uid"] == "uid-2"


@pytest.mark.parametrize("body, query", [({"propagationPolicy": "Background"}, None), (None, None)])
def test_a_background_delete_removes_the_job_at_once_and_its_pods_later(apis, body, query):
    custom, core = apis
    create(custom)
    custom.delete_namespaced_custom_object(name="train-abc123", body=body, **PATH)  # Background: the CRD default
    assert status_of(lambda: custom.get_namespaced_custom_object(name="train-abc123", **PATH)) == 404
    assert pod_names(core) == ["train-abc123-master-0", "train-abc123-worker-0"]
    time.sleep(0.35)
    assert pod_names(core) == []


def test_an_orphan_delete_leaves_the_pods_and_the_query_is_read_without_a_body(apis):
    custom, core = apis
    create(custom)
    custom.delete_namespaced_custom_object(name="train-abc123", propagation_policy="Orphan", **PATH)
    assert status_of(lambda: custom.get_namespaced_custom_object(name="train-abc123", **PATH)) == 404
    time.sleep(0.35)
    assert pod_names(core) == ["train-abc123-master-0", "train-abc123-worker-0"]


def test_an_unknown_propagation_policy_is_refused(apis):
    custom, _ = apis
    create(custom)

    def delete():
        return custom.delete_namespaced_custom_object(name="train-abc123", body={"propagationPolicy": "Later"}, **PATH)

    assert status_of(delete) == 422


# --- label selectors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("training.kubeflow.org/job-name=train-abc123,training.kubeflow.org/replica-type=master", ["m0"]),
        ("training.kubeflow.org/job-name==train-abc123,training.kubeflow.org/replica-type!=master", ["w0", "w1"]),
        (
            "training.kubeflow.org/replica-type in (master, worker),training.kubeflow.org/replica-index notin (1)",
            ["m0", "w0"],
        ),
        ("training.kubeflow.org/job-role", ["m0"]),
        ("!training.kubeflow.org/job-role,training.kubeflow.org/job-name=train-abc123", ["w0", "w1"]),
        ("training.kubeflow.org/job-name=other", []),
        ("", ["m0", "w0", "w1"]),
    ],
)
def test_label_selectors_are_honoured(apis, selector, expected):
    custom, core = apis
    create(custom, workers=3)
    short = {"train-abc123-master-0": "m0", "train-abc123-worker-0": "w0", "train-abc123-worker-1": "w1"}
    assert [short[name] for name in pod_names(core, selector)] == expected


@pytest.mark.parametrize("selector", ["a in b", "a=(b)", "=b", "a in (b"])
def test_a_selector_the_api_server_cannot_parse_is_refused(apis, selector):
    _, core = apis
    assert status_of(lambda: core.list_namespaced_pod("team-a", label_selector=selector)) == 400


# --- pod logs ---------------------------------------------------------------------------------------------------


def test_a_pod_with_several_containers_needs_the_container_named(kube, apis):
    custom, core = apis
    kube.sidecars = ["fluent-bit"]
    create(custom)
    time.sleep(0.25)
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_pod_log("train-abc123-master-0", "team-a")
    assert raised.value.status == 400
    assert "a container name must be specified for pod train-abc123-master-0, choose one of: [pytorch fluent-bit]" in (
        raised.value.body
    )
    assert status_of(lambda: core.read_namespaced_pod_log("train-abc123-master-0", "team-a", container="x")) == 400
    log = core.read_namespaced_pod_log("train-abc123-master-0", "team-a", container="pytorch")
    assert log == "rank 0 starting\nepoch 1/1 done\ntraining finished\n"


def test_a_followed_log_streams_until_the_container_ends(kube, apis):
    custom, core = apis
    kube.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.6, "Succeeded")]
    kube.log_lines = [(0.1, "first"), (0.4, "second")]
    create(custom)
    time.sleep(0.15)
    response = core.read_namespaced_pod_log(
        "train-abc123-master-0", "team-a", container="pytorch", follow=True, timestamps=True, _preload_content=False
    )
    arrivals = [(time.monotonic(), chunk) for chunk in response.stream(1024)]
    lines = b"".join(chunk for _, chunk in arrivals).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
    assert all(line[:4].isdigit() and line.split(" ")[0].endswith("Z") for line in lines)  # RFC 3339 timestamps
    assert arrivals[-1][0] - arrivals[0][0] >= 0.2  # "second" came as it was written, not at once


def test_a_pending_pod_has_no_log_yet(kube, apis):
    custom, core = apis
    kube.script = [Step(0, "Created")]
    kube.pending_pods = {"master": unschedulable()}
    create(custom)
    pods = core.list_namespaced_pod("team-a", label_selector="training.kubeflow.org/replica-type=master").items
    assert pods[0].status.phase == "Pending" and pods[0].status.conditions[0].reason == "Unschedulable"
    assert (
        status_of(lambda: core.read_namespaced_pod_log("train-abc123-master-0", "team-a", container="pytorch")) == 400
    )


# --- injected faults, as the client meets them ------------------------------------------------------------------


def test_injected_statuses_reach_the_client_as_api_exceptions(kube, apis):
    custom, _ = apis
    create(custom)
    get = lambda: custom.get_namespaced_custom_object(name="train-abc123", **PATH)  # noqa: E731
    for status in (500, 503, 429):
        kube.inject(Fault("GET", JOB, status))
        assert status_of(get) == status
    kube.inject(Fault("GET", JOB, 403))
    with pytest.raises(ApiException) as raised:
        get()
    message = json.loads(raised.value.body)["message"]
    assert message == (
        'pytorchjobs.kubeflow.org "train-abc123" is forbidden: User "system:serviceaccount:kubeflow:pipeline-runner" '
        'cannot get resource "pytorchjobs" in API group "kubeflow.org" in the namespace "team-a"'
    )
    kube.inject(Fault("GET", JOB, 429, retry_after=0, times=3))  # urllib3 itself retries a Retry-After 3 times
    assert get()["metadata"]["name"] == "train-abc123"


def test_resets_reach_the_client_as_urllib3_errors(kube, apis):
    custom, _ = apis
    kube.inject(Fault("POST", "/pytorchjobs", RESET, carried_out=True))
    with pytest.raises(ProtocolError):  # a POST is not retried by urllib3
        create(custom)
    assert len(kube.created) == 1  # carried out: the reply was lost, not the create
    kube.inject(Fault("GET", JOB, RESET, times=4))
    with pytest.raises(MaxRetryError):  # a GET is, 3 times
        custom.get_namespaced_custom_object(name="train-abc123", **PATH)


# --- conditions, as the Training Operator sets them -------------------------------------------------------------


def test_conditions_carry_timestamps_and_follow_the_operators_rules(kube, apis):
    custom, _ = apis
    kube.script = [
        Step(0, "Created"),
        Step(0.05, "Suspended"),
        Step(0.1, "Running"),
        Step(0.15, "Restarting"),
        Step(0.2, "Running"),
        Step(0.25, "Failed", "BackoffLimitExceeded"),
        Step(0.3, "Succeeded"),  # nothing changes after Failed
    ]
    create(custom)
    time.sleep(0.35)
    conditions = custom.get_namespaced_custom_object(name="train-abc123", **PATH)["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in conditions] == [
        ("Created", "True"),
        ("Suspended", "False"),
        ("Running", "False"),
        ("Failed", "True"),
    ]
    assert all(c["lastTransitionTime"].endswith("Z") and c["lastUpdateTime"] for c in conditions)
    assert conditions[-1]["reason"] == "BackoffLimitExceeded"
