"""The fake Kubernetes API server (tests/support/fake_kube.py) answers the official client as the real one does."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, ProtocolError

from components.pytorchjob_train.manifest import PyTorchJobConfig, build_manifest, training_command
from tests.support.fake_jobs import Step
from tests.support.fake_kube import RESET, Controller, FakeKube, Fault, Resource, Subresource, unschedulable
from tests.support.fake_pytorchjob import TrainingOperator

PATH = {"group": "kubeflow.org", "version": "v1", "namespace": "team-a", "plural": "pytorchjobs"}
JOB = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs/train-abc123"


@pytest.fixture
def operator():
    return TrainingOperator()


@pytest.fixture
def kube(operator):
    server = FakeKube([operator], deletion_seconds=0.3).start()
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


def test_a_followed_log_streams_until_the_container_ends(operator, apis):
    custom, core = apis
    operator.script = [Step(0, "Created"), Step(0.1, "Running"), Step(0.6, "Succeeded")]
    operator.log_lines = [(0.1, "first"), (0.4, "second")]
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


def test_a_pending_pod_has_no_log_yet(operator, apis):
    custom, core = apis
    operator.script = [Step(0, "Created")]
    operator.pending_pods = {"master": unschedulable()}
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


def test_resets_reach_the_client_as_urllib3_errors(kube, operator, apis):
    custom, _ = apis
    kube.inject(Fault("POST", "/pytorchjobs", RESET, carried_out=True))
    with pytest.raises(ProtocolError):  # a POST is not retried by urllib3
        create(custom)
    assert len(operator.created) == 1  # carried out: the reply was lost, not the create
    kube.inject(Fault("GET", JOB, RESET, times=4))
    with pytest.raises(MaxRetryError):  # a GET is, 3 times
        custom.get_namespaced_custom_object(name="train-abc123", **PATH)


# --- conditions, as the Training Operator sets them -------------------------------------------------------------


def test_conditions_carry_timestamps_and_follow_the_operators_rules(operator, apis):
    custom, _ = apis
    operator.script = [
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


def test_a_resumed_job_has_the_operators_resumed_conditions(operator, apis):
    """As the operator's own test (pytorchjob_controller_test.go, "resumed conditions") has them."""
    custom, _ = apis
    operator.script = [Step(0, "Created"), Step(0.05, "Suspended"), Step(0.1, "Created"), Step(0.2, "Running")]
    create(custom)
    time.sleep(0.15)
    conditions = custom.get_namespaced_custom_object(name="train-abc123", **PATH)["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Created", "True", "PyTorchJobCreated"),
        ("Suspended", "False", "PyTorchJobResumed"),
    ]
    time.sleep(0.1)
    conditions = custom.get_namespaced_custom_object(name="train-abc123", **PATH)["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Created", "True", "PyTorchJobCreated"),
        ("Suspended", "False", "PyTorchJobResumed"),
        ("Running", "True", "PyTorchJobRunning"),
    ]


# --- objects, as the API server stores them ----------------------------------------------------------------------


def test_objects_are_listed_by_label_selector_as_a_list_of_their_kind(apis):
    custom, _ = apis
    create(custom)
    create(custom, name="train-other")
    listed = custom.list_namespaced_custom_object(**PATH, label_selector="app.kubernetes.io/managed-by")
    assert listed["kind"] == "PyTorchJobList" and len(listed["items"]) == 2
    assert custom.list_namespaced_custom_object(**PATH, label_selector="team=none")["items"] == []
    assert status_of(lambda: custom.list_namespaced_custom_object(**PATH, label_selector="a in b")) == 400


def test_an_object_for_another_namespace_than_the_path_is_refused(apis):
    custom, _ = apis
    config = PyTorchJobConfig(image="img:1", command=training_command(1))
    body = build_manifest(config, "train-abc123", "team-b", [])
    assert status_of(lambda: custom.create_namespaced_custom_object(body=body, **PATH)) == 400


def test_a_resource_nobody_serves_is_not_found(kube):
    other = {"group": "trainer.kubeflow.org", "version": "v1alpha1", "namespace": "team-a", "plural": "trainjobs"}
    custom = client.CustomObjectsApi(kube.api_client())
    assert status_of(lambda: custom.list_namespaced_custom_object(**other)) == 404
    assert status_of(lambda: custom.create_namespaced_custom_object(body={"metadata": {"name": "x"}}, **other)) == 404


def test_a_patch_in_a_media_type_the_resource_does_not_take_is_refused(apis):
    custom, _ = apis
    create(custom)
    with pytest.raises(ApiException) as raised:
        custom.patch_namespaced_custom_object(name="train-abc123", body={"spec": {}}, **PATH)
    assert raised.value.status == 415
    assert "the body of the request was in an unknown format" in json.loads(raised.value.body)["message"]


# --- discovery ----------------------------------------------------------------------------------------------------


class Deployments(Controller):
    """A second controller, in another group: discovery lists what the fake was started with."""

    resource = Resource(
        "apps", "v1", "deployments", "Deployment", singular="deployment", short_names=("deploy",),
        categories=("all",), subresources=(Subresource("status", "Deployment"),),
    )  # fmt: skip


@pytest.fixture
def two_kinds(operator):
    server = FakeKube([operator, Deployments()]).start()
    yield server
    server.stop()


def test_discovery_lists_exactly_the_groups_and_resources_served(two_kinds):
    api_client = two_kinds.api_client()
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    core = client.CoreV1Api(api_client).get_api_resources()
    assert core.group_version == "v1"
    assert [(r.name, r.kind, r.verbs) for r in core.resources] == [
        ("pods", "Pod", ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]),
        ("pods/log", "Pod", ["get"]),
        ("events", "Event", ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]),
    ]
    groups = client.ApisApi(api_client).get_api_versions().groups
    assert [(g.name, [v.group_version for v in g.versions], g.preferred_version.version) for g in groups] == [
        ("kubeflow.org", ["kubeflow.org/v1"], "v1"),
        ("apps", ["apps/v1"], "v1"),
    ]
    custom = client.CustomObjectsApi(api_client)
    pytorchjobs = custom.get_api_resources("kubeflow.org", "v1")
    assert pytorchjobs.group_version == "kubeflow.org/v1"
    # As apiextensions-apiserver lists a CRD with status and scale subresources.
    assert [(r.name, r.singular_name, r.kind, r.verbs, r.group) for r in pytorchjobs.resources] == [
        (
            "pytorchjobs",
            "pytorchjob",
            "PyTorchJob",
            ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
            None,
        ),
        ("pytorchjobs/status", "", "PyTorchJob", ["get", "patch", "update"], None),
        ("pytorchjobs/scale", "", "Scale", ["get", "patch", "update"], "autoscaling"),
    ]
    assert [r.name for r in custom.get_api_resources("apps", "v1").resources] == ["deployments", "deployments/status"]
    for group, version in (("trainer.kubeflow.org", "v1alpha1"), ("kubeflow.org", "v2"), ("serving.kserve.io", "v1")):
        assert status_of(lambda g=group, v=version: custom.get_api_resources(g, v)) == 404


def test_discovery_serves_the_dynamic_client_and_needs_no_permission(two_kinds):
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dynamic = DynamicClient(two_kinds.api_client())
    assert dynamic.resources.get(api_version="kubeflow.org/v1", kind="PyTorchJob").name == "pytorchjobs"
    assert dynamic.resources.get(api_version="apps/v1", kind="Deployment").namespaced
    with pytest.raises(ResourceNotFoundError):
        dynamic.resources.get(api_version="trainer.kubeflow.org/v1alpha1", kind="TrainJob")
    asked = {request.path for request in two_kinds.requests}
    assert {"/version", "/apis", "/apis/kubeflow.org/v1", "/apis/apps/v1"} <= asked, asked
    assert all(request.access is None for request in two_kinds.requests), "any authenticated user may read these"


def test_one_resource_has_one_controller():
    with pytest.raises(ValueError, match="two controllers serve pytorchjobs.kubeflow.org"):
        FakeKube([TrainingOperator(), TrainingOperator()])


# --- events -------------------------------------------------------------------------------------------------------


def test_events_are_listed_by_field_selector_on_the_indexed_fields(kube, operator, apis):
    custom, core = apis
    create(custom)
    job = operator.objects[("team-a", "train-abc123")]
    kube.record_event(
        job.reference(), "Created", "created pod train-abc123-master-0", component="pytorchjob-controller"
    )
    kube.record_event(
        {**job.reference(), "kind": "Pod", "name": "train-abc123-master-0", "apiVersion": "v1"},
        "FailedScheduling",
        "0/3 nodes are available",
        type="Warning",
        component="default-scheduler",
    )
    listed = core.list_namespaced_event("team-a")
    assert [e.reason for e in listed.items] == ["Created", "FailedScheduling"]
    selector = "involvedObject.kind=PyTorchJob,involvedObject.name=train-abc123"
    assert [e.message for e in core.list_namespaced_event("team-a", field_selector=selector).items] == [
        "created pod train-abc123-master-0"
    ]
    warnings = core.list_namespaced_event("team-a", field_selector="type!=Normal,source=default-scheduler").items
    assert [(e.involved_object.name, e.source.component) for e in warnings] == [
        ("train-abc123-master-0", "default-scheduler")
    ]
    assert core.list_namespaced_event("team-b").items == []
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_event("team-a", field_selector="message=x")
    assert raised.value.status == 400 and "field label not supported: message" in raised.value.body
