"""The fake Kubeflow Trainer and JobSet (tests/support/fake_trainjob.py) answer the official client as the real ones
do, in each supported release: what the launcher relies on, checked one behaviour at a time."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from components.train.rendezvous import rendezvous_from_env
from components.trainjob_train.manifest import TrainJobConfig, build_manifest, training_command
from tests.support.fake_jobs import Step
from tests.support.fake_kube import FakeKube
from tests.support.fake_trainjob import KubeflowTrainer, pod_environment

NAME, NS = "train-abc123", "team-a"
PATH = {"group": "trainer.kubeflow.org", "version": "v1alpha1", "namespace": NS, "plural": "trainjobs"}


@pytest.fixture(params=["2.3", "2.1"])
def trainer(request):
    return KubeflowTrainer(release=request.param)


@pytest.fixture
def kube(trainer):
    server = FakeKube([trainer]).start()
    yield server
    server.stop()


@pytest.fixture
def apis(kube):
    api_client = kube.api_client()
    return client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)


def body(trainer, name=NAME, **settings):
    config = TrainJobConfig(image="img:1", command=training_command(), trainer_release=trainer.release, **settings)
    return build_manifest(config, name, NS, ["--epochs", "1"])


def create(apis, trainer, **settings):
    return apis[0].create_namespaced_custom_object(body=body(trainer, **settings), **PATH)


def get(apis):
    return apis[0].get_namespaced_custom_object(name=NAME, **PATH)


def refusal(call) -> ApiException:
    with pytest.raises(ApiException) as raised:
        call()
    return raised.value


def test_a_trainjob_runs_as_jobset_pods_with_jobsets_names_and_labels(apis, trainer):
    trainer.script = [Step(0, "Running")]
    create(apis, trainer, num_nodes=2)
    pods = sorted(apis[1].list_namespaced_pod(NS, label_selector=f"jobset.sigs.k8s.io/jobset-name={NAME}").items,
                  key=lambda pod: pod.metadata.name)  # fmt: skip
    assert [pod.metadata.name[: -len("-xxxxx")] for pod in pods] == [f"{NAME}-node-0-0", f"{NAME}-node-0-1"]
    for index, pod in enumerate(pods):
        labels = pod.metadata.labels
        assert labels["jobset.sigs.k8s.io/replicatedjob-name"] == "node"
        assert labels["jobset.sigs.k8s.io/job-index"] == "0"
        assert labels["batch.kubernetes.io/job-name"] == f"{NAME}-node-0"
        assert labels["batch.kubernetes.io/job-completion-index"] == str(index)
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(index)
        assert [c.name for c in pod.spec.containers] == ["node"]
        assert pod.spec.hostname == f"{NAME}-node-0-{index}" and pod.spec.subdomain == NAME


def test_the_torch_plugin_sets_the_pet_variables_and_they_rendezvous_every_node_at_node_0(apis, trainer, kube):
    trainer.script = [Step(0, "Running")]
    create(apis, trainer, num_nodes=3, nproc_per_node=2)
    pods = sorted(kube.pods(NS, time.monotonic()), key=lambda entry: entry[2]["metadata"]["name"])
    environments = [pod_environment(pod) for _, _, pod in pods]
    assert environments[1] == {
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "2",
        "PET_NODE_RANK": "1",  # from the Job's completion index
        "PET_MASTER_ADDR": f"{NAME}-node-0-0.{NAME}",
        "PET_MASTER_PORT": "29500",
    }
    rendezvous = [rendezvous_from_env(env) for env in environments]
    assert [node_zero for _, _, node_zero in rendezvous] == [True, False, False]
    assert rendezvous[2] == (
        2,
        ["--nnodes=3", "--node-rank=2", f"--master-addr={NAME}-node-0-0.{NAME}", "--master-port=29500"],
        False,
    )


def test_complete_and_failed_are_jobsets_conditions_renamed(apis, trainer):
    trainer.script = [Step(0, "Running"), Step(0.1, "Complete")]
    create(apis, trainer)
    time.sleep(0.15)
    (complete,) = get(apis)["status"]["conditions"]
    assert (complete["type"], complete["status"], complete["reason"]) == ("Complete", "True", "AllJobsCompleted")
    assert complete["message"] == "jobset completed successfully"


def test_a_failed_jobset_fails_the_trainjob_with_its_first_failed_job(apis, trainer):
    trainer.script = [Step(0, "Running"), Step(0, "Failed")]
    create(apis, trainer)
    (failed,) = get(apis)["status"]["conditions"]
    assert (failed["type"], failed["reason"]) == ("Failed", "FailedJobs")
    assert failed["message"] == f"jobset failed due to one or more job failures (first failed job: {NAME}-node-0)"


def test_suspended_then_resumed_updates_one_condition_in_place_and_the_pods_follow(apis, trainer, kube):
    trainer.script = [Step(0, "Suspended"), Step(0.2, "Resumed"), Step(0.3, "Running")]
    create(apis, trainer)
    job = get(apis)
    assert job["spec"]["suspend"] is True
    assert [(c["type"], c["status"], c["reason"]) for c in job["status"]["conditions"]] == [
        ("Suspended", "True", "Suspended")
    ]
    assert not kube.pods(NS, time.monotonic())  # a suspended Job has no pods
    time.sleep(0.35)
    job = get(apis)
    assert job["spec"]["suspend"] is False
    (condition,) = job["status"]["conditions"]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "Resumed",
        "TrainJob is resumed",
    )
    assert job["status"]["jobsStatus"][0]["ready"] == 1 and kube.pods(NS, time.monotonic())


def test_the_webhook_refuses_a_missing_runtime_with_403(apis, trainer):
    trainer.runtimes.clear()
    error = refusal(lambda: create(apis, trainer))
    assert error.status == 403
    assert (
        error.body
        and 'admission webhook \\"validator.trainjob.trainer.kubeflow.org\\" denied the request' in error.body
    )
    assert "must be created before the TrainJob is created" in error.body


def test_without_the_webhook_a_missing_runtime_makes_no_pods_and_a_warning_event(apis, trainer, kube):
    trainer.webhook, trainer.runtimes = False, {}
    create(apis, trainer)
    assert not kube.pods(NS, time.monotonic()) and "conditions" not in get(apis).get("status", {})
    (event,) = apis[1].list_namespaced_event(NS, field_selector=f"involvedObject.name={NAME}").items
    assert (event.type, event.reason, event.involved_object.kind) == (
        "Warning",
        "TrainJobResourcesCreationFailed",
        "TrainJob",
    )


def test_an_unregistered_runtime_kind_fails_with_training_runtime_not_supported(apis, trainer):
    trainer.webhook, trainer.runtime_kinds = False, {"ClusterTrainingRuntime"}
    create(apis, trainer, runtime_kind="TrainingRuntime")
    (failed,) = get(apis)["status"]["conditions"]
    assert (failed["reason"], failed["message"]) == (
        "TrainingRuntimeNotSupported",
        "unsupported runtime: TrainingRuntime.trainer.kubeflow.org",
    )


@pytest.mark.parametrize(
    "name, message",
    [("a" * 64, "metadata.name must be no more than 63 characters"), ("1train", "must match RFC 1035 DNS label")],
)
def test_crd_cel_rules_refuse_a_bad_name_with_422(apis, trainer, name, message):
    manifest = body(trainer)
    manifest["metadata"]["name"] = name
    error = refusal(lambda: apis[0].create_namespaced_custom_object(body=manifest, **PATH))
    assert error.status == 422 and message in error.body


def test_unknown_fields_are_refused(apis, trainer):
    manifest = body(trainer)
    manifest["spec"]["trainer"]["nprocPerNode"] = 2  # PyTorchJob's spelling
    error = refusal(lambda: apis[0].create_namespaced_custom_object(body=manifest, **PATH))
    assert error.status == 422 and 'unknown field \\"spec.trainer.nprocPerNode\\"' in error.body


def test_the_webhook_refuses_reserved_pet_variables(apis, trainer):
    manifest = body(trainer)
    manifest["spec"]["trainer"]["env"] = [{"name": "PET_MASTER_PORT", "value": "1"}]
    error = refusal(lambda: apis[0].create_namespaced_custom_object(body=manifest, **PATH))
    assert (
        error.status == 403 and "must not have reserved envs, invalid envs configured: [PET_MASTER_PORT]" in error.body
    )


def test_num_proc_per_node_takes_an_integer_and_in_v2_1_auto_cpu_or_gpu(apis, trainer):
    manifest = body(trainer)
    manifest["spec"]["trainer"]["numProcPerNode"] = "many"
    error = refusal(lambda: apis[0].create_namespaced_custom_object(body=manifest, **PATH))
    if trainer.release == "2.1":  # an int-or-string the torch plugin's webhook checks
        assert error.status == 403 and "must have an int value or [auto cpu gpu]" in error.body
        manifest["spec"]["trainer"]["numProcPerNode"] = "auto"
        apis[0].create_namespaced_custom_object(body=manifest, **PATH)
    else:  # an int32 in the CRD
        assert error.status == 422 and "spec.trainer.numProcPerNode" in error.body


def test_immutable_fields_are_refused_on_update_and_suspend_is_not(apis, trainer):
    create(apis, trainer)
    patch = {"spec": {"runtimeRef": {"name": "other-runtime"}}}
    error = refusal(lambda: apis[0].patch_namespaced_custom_object(name=NAME, body=patch, **PATH))
    assert error.status == 422
    assert ("runtimeRef is immutable" if trainer.release == "2.1" else "field is immutable") in error.body
    if trainer.release == "2.3":  # v2.3 made the trainer immutable too
        patch = {"spec": {"trainer": {"numNodes": 5}}}
        error = refusal(lambda: apis[0].patch_namespaced_custom_object(name=NAME, body=patch, **PATH))
        assert "spec.trainer: Invalid value" in error.body
    patched = apis[0].patch_namespaced_custom_object(name=NAME, body={"spec": {"suspend": True}}, **PATH)
    assert patched["spec"]["suspend"] is True


def test_the_override_field_changes_only_while_suspended(apis, trainer):
    create(apis, trainer, node_selector={"pool": "a"})
    field = "podTemplateOverrides" if trainer.release == "2.1" else "runtimePatches"
    changed = body(trainer, node_selector={"pool": "b"})["spec"][field]
    error = refusal(lambda: apis[0].patch_namespaced_custom_object(name=NAME, body={"spec": {field: changed}}, **PATH))
    assert error.status == 403 and "can only be modified when the TrainJob is suspended" in error.body
    suspended = {"spec": {field: changed, "suspend": True}}
    assert apis[0].patch_namespaced_custom_object(name=NAME, body=suspended, **PATH)["spec"]["suspend"] is True


def test_v2_3s_active_deadline_fails_the_trainjob_and_removes_its_pods(apis, trainer, kube):
    if trainer.release == "2.1":
        pytest.skip("v2.1 has no activeDeadlineSeconds")
    trainer.script = [Step(0, "Running")]
    create(apis, trainer, active_deadline_seconds=1)
    time.sleep(1.05)
    (failed,) = get(apis)["status"]["conditions"]
    assert (failed["reason"], failed["message"]) == ("DeadlineExceeded", "TrainJob exceeded its active deadline")
    assert not kube.pods(NS, time.monotonic())


def test_deleting_the_trainjob_cascades_to_its_pods(apis, trainer, kube):
    trainer.script = [Step(0, "Running")]
    create(apis, trainer)
    apis[0].delete_namespaced_custom_object(name=NAME, body={"propagationPolicy": "Foreground"}, **PATH)
    assert all(pod["metadata"].get("deletionTimestamp") for _, _, pod in kube.pods(NS, time.monotonic()))
    kube.wait_for(lambda: not kube.pods(NS, time.monotonic()))
