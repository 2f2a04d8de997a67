"""The TrainJob manifest for each supported Kubeflow Trainer release, validated as the API server and Trainer's
webhook validate it (tests/support/trainer_rules.py, from each release's CRD in ../shared/reference/crds/)."""

from __future__ import annotations

import pytest

from components.trainjob_train.manifest import (
    OVERRIDE_FIELD,
    TRAINER_RELEASES,
    ManifestError,
    TrainJobConfig,
    build_manifest,
    training_command,
)
from components.trainjob_train.step import with_deadline_backstop
from tests.support.trainer_rules import cel_errors, runtime, schema_errors, webhook_errors

FULL = dict(
    num_nodes=3,
    nproc_per_node=2,
    cpu="8",
    memory="32Gi",
    gpus=2,
    accelerator_type="nvidia.com/gpu",
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    shm_size="8Gi",
    env={"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcs/key.json"},
    secret_volumes={"gcs-reader": "/var/secrets/gcs"},
    optional_secret_volumes={"mlpipeline-minio-artifact": "/var/secrets/artifact-store"},
    service_account="trainer-sa",
    queue_name="gpu-queue",
    active_deadline_seconds=87000,
)


def manifest(release, now=1_700_000_000.0, **settings):
    config = TrainJobConfig(image="registry.example.com/train:1", command=training_command(), trainer_release=release)
    for key, value in settings.items():
        setattr(config, key, value)
    return build_manifest(config, "train-abc123", "team-a", ["--epochs", "2"], now=now)


def admitted(body, release):
    runtimes = {("ClusterTrainingRuntime", "torch-distributed"): runtime(release)}
    kinds = {"ClusterTrainingRuntime", "TrainingRuntime"}
    return (
        schema_errors(body, release)
        + cel_errors(body, release)
        + list(webhook_errors(body, release, runtimes, kinds, "team-a"))
    )


@pytest.mark.parametrize("release", TRAINER_RELEASES)
@pytest.mark.parametrize("settings", [{}, FULL], ids=["defaults", "every-setting"])
def test_each_release_gets_a_trainjob_its_crd_and_webhook_admit(release, settings):
    assert admitted(manifest(release, **settings), release) == []


@pytest.mark.parametrize("release, other", [("2.3", "2.1"), ("2.1", "2.3")])
def test_a_manifest_for_one_release_is_refused_by_the_others_crd(release, other):
    """Why the release is a cluster setting: the override field is another one."""
    errors = schema_errors(manifest(release, **FULL), other)
    assert f'unknown field "spec.{OVERRIDE_FIELD[release]}"' in errors


def test_placement_and_mounts_go_through_v2_3s_runtime_patches():
    spec = manifest("2.3", **FULL)["spec"]
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "kfp-torch-lifecycle/launcher"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert_placement(pod["spec"])
    assert spec["activeDeadlineSeconds"] == 87000
    assert spec["trainer"]["command"] == training_command()


def test_placement_and_mounts_go_through_v2_1s_pod_template_overrides_and_the_deadline_wraps_the_command():
    spec = manifest("2.1", now=1_700_000_000.0, **FULL)["spec"]
    (override,) = spec["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    assert_placement(override["spec"])
    assert "activeDeadlineSeconds" not in spec  # v2.1 has none
    deadline = ["python", "-m", "components.train.deadline", "--until", str(1_700_000_000 + 87000), "--"]
    assert spec["trainer"]["command"] == [*deadline, *training_command()]


def assert_placement(pod_spec):
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec["tolerations"] == FULL["tolerations"]
    assert pod_spec["serviceAccountName"] == "trainer-sa"
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
    assert volumes["secret-0"]["secret"] == {"secretName": "gcs-reader"}
    assert volumes["secret-1"]["secret"] == {"secretName": "mlpipeline-minio-artifact", "optional": True}
    (node,) = pod_spec["containers"]
    assert node["name"] == "node" and "env" not in node  # the webhook refuses env here: it goes in trainer.env
    assert {m["mountPath"] for m in node["volumeMounts"]} == {
        "/dev/shm",
        "/var/secrets/gcs",
        "/var/secrets/artifact-store",
    }


@pytest.mark.parametrize("release", TRAINER_RELEASES)
def test_the_trainer_carries_nodes_processes_resources_and_env(release):
    body = manifest(release, **FULL)
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 2},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": 2},
    }
    assert trainer["env"] == [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/gcs/key.json"}]
    assert trainer["args"] == ["--epochs", "2"]
    assert body["spec"]["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"


def test_amd_gpus_are_counted_in_their_own_resource():
    trainer = manifest("2.3", gpus=1, accelerator_type="amd.com/gpu")["spec"]["trainer"]
    assert trainer["resourcesPerNode"]["limits"]["amd.com/gpu"] == 1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"env": {"PET_NNODES": "4"}}, r"env must not set PET_NNODES: Kubeflow Trainer's torch plugin sets them"),
        ({"trainer_release": "2.0"}, r"trainer_release must be one of 2.3, 2.1 .*got '2.0'"),
        ({"runtime_kind": "JobSet"}, r"runtime_kind must be one of ClusterTrainingRuntime, TrainingRuntime"),
        ({"runtime": "Torch_Distributed"}, r"runtime 'Torch_Distributed' is not a runtime's name"),
        ({"num_nodes": 0}, r"num_nodes must be an integer >= 1, got 0"),
        ({"gpus": 1, "nproc_per_node": 2}, r"nproc_per_node=2 exceeds gpus=1"),
        ({"queue_name": "gpu queue"}, r"queue_name 'gpu queue' is not a valid label value"),
        ({"cpu": "16K"}, r"cpu must be a Kubernetes quantity"),
        ({"env": {"HF_TOKEN": "x"}}, r"env 'HF_TOKEN' looks like a credential"),
    ],
)
def test_bad_values_fail_before_anything_is_sent(settings, message):
    with pytest.raises(ManifestError, match=message):
        manifest("2.3", **settings)


@pytest.mark.parametrize("name", ["a" * 64, "1train", "Train"])
def test_names_trainers_cel_rules_refuse_are_refused_first(name):
    config = TrainJobConfig(image="img", command=training_command())
    with pytest.raises(ManifestError, match="is not a DNS-1035 label"):
        build_manifest(config, name, "team-a", [])


def test_the_backstop_is_the_steps_timeout_plus_a_margin_unless_given():
    config = TrainJobConfig(image="img", command=training_command())
    assert with_deadline_backstop(config, 86400).active_deadline_seconds == 87000
    config.active_deadline_seconds = 100
    assert with_deadline_backstop(config, 86400).active_deadline_seconds == 100
