"""Every PyTorchJob manifest the component can generate validates against the real CRD schema."""

from __future__ import annotations

import re

import pytest

from components.pytorchjob_train.manifest import ManifestError, PyTorchJobConfig, build_manifest, training_command
from tests.support.operator_rules import crd_validator, webhook_violations


@pytest.fixture(scope="module")
def validator():
    return crd_validator()


def config(**overrides) -> PyTorchJobConfig:
    defaults = {"image": "registry.example.com/train:0.1.0", "command": training_command(1)}
    return PyTorchJobConfig(**(defaults | overrides))


VARIANTS = {
    "cpu-single-pod": config(num_workers=1),
    "cpu-two-pods": config(num_workers=2),
    "gpu": config(num_workers=4, gpus=8, nproc_per_node=8, command=training_command(8), cpu="32", memory="200Gi"),
    "amd-gpu": config(gpus=2, nproc_per_node=2, accelerator_type="amd.com/gpu", command=training_command(2)),
    "gpu-nodes-tolerations": config(
        gpus=1,
        node_selector={"nvidia.com/gpu.present": "true", "gpu": "true"},
        tolerations=[
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 60},
        ],
    ),
    "shm-secrets-env": config(
        shm_size="16Gi",
        secret_volumes={"gcs-key": "/var/secrets/gcs", "registry-auth": "/var/secrets/registry"},
        env={"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcs/key.json", "NCCL_DEBUG": "INFO"},
        service_account="pipeline-runner",
    ),
    "artifact-store-secret": config(
        secret_volumes={"gcs-key": "/var/secrets/gcs"},
        optional_secret_volumes={"mlpipeline-minio-artifact": "/var/secrets/artifact-store"},
        env={"KFP_TORCH_S3_CREDENTIALS_DIR": "/var/secrets/artifact-store"},
    ),
    "no-shm-deadline": config(shm_size="", active_deadline_seconds=7200, backoff_limit=3, clean_pod_policy="Running"),
    "restart-exitcode": config(restart_policy="ExitCode", ttl_seconds_after_finished=0),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_manifest_validates_against_crd_schema(validator, variant):
    manifest = build_manifest(VARIANTS[variant], "train-abc123", "kubeflow-user", ["--epochs", "3"])
    errors = sorted(validator.iter_errors(manifest), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert webhook_violations(manifest) == []


def test_manifest_shape(validator):
    manifest = build_manifest(VARIANTS["gpu-nodes-tolerations"], "train-abc123", "team-a", ["--epochs", "3"])
    master = manifest["spec"]["pytorchReplicaSpecs"]["Master"]
    worker = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert master["replicas"] == 1 and worker["replicas"] == 1
    pod = master["template"]
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    container = pod["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["spec"]["volumes"]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true", "gpu": "true"}
    assert manifest["spec"]["runPolicy"] == {
        "cleanPodPolicy": "All",
        "ttlSecondsAfterFinished": 3600,
        "backoffLimit": 0,
    }
    single = build_manifest(VARIANTS["cpu-single-pod"], "train-abc123", "team-a", [])
    assert "Worker" not in single["spec"]["pytorchReplicaSpecs"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_workers": 0}, r"num_workers must be an integer >= 1, got 0"),
        ({"gpus": -1}, r"gpus must be an integer >= 0, got -1"),
        ({"nproc_per_node": 0}, r"nproc_per_node must be an integer >= 1"),
        ({"gpus": 2, "nproc_per_node": 4}, r"nproc_per_node=4 exceeds gpus=2"),
        ({"accelerator_type": "gpu"}, r"accelerator_type must be an extended resource name like 'nvidia.com/gpu'"),
        ({"restart_policy": "Sometimes"}, r"restart_policy must be one of Always, OnFailure, Never, ExitCode"),
        ({"clean_pod_policy": "Some"}, r"clean_pod_policy must be one of All, Running, None"),
        ({"memory": "lots"}, r"memory must be a Kubernetes quantity"),
        ({"tolerations": [{"key": "gpu", "operatr": "Exists"}]}, r"unknown key\(s\) operatr"),
        ({"tolerations": [{"key": "gpu", "effect": "Never"}]}, r"effect must be one of"),
        ({"node_selector": {"gpu": True}}, r"node_selector\['gpu'\] must be a string"),
        ({"env": {"HF_TOKEN": "hf_abc"}}, r"env 'HF_TOKEN' looks like a credential"),
        ({"secret_volumes": {"Bad_Name": "/x"}}, r"secret name 'Bad_Name' is not a DNS-1123 subdomain"),
        ({"optional_secret_volumes": {"Bad_Name": "/x"}}, r"secret name 'Bad_Name' is not a DNS-1123 subdomain"),
        (
            {"secret_volumes": {"a": "/x"}, "optional_secret_volumes": {"a": "/y"}},
            r"secret\(s\) a are in both secret_volumes and optional_secret_volumes",
        ),
        (
            {"secret_volumes": {"a": "/x"}, "optional_secret_volumes": {"b": "/x"}},
            r"two secrets would be mounted at the same path",
        ),
        ({"active_deadline_seconds": -5}, r"active_deadline_seconds must be an integer >= 0"),
    ],
)
def test_bad_values_fail_before_anything_is_sent(overrides, message):
    with pytest.raises(ManifestError, match=message):
        build_manifest(config(**overrides), "train-abc123", "team-a", [])


@pytest.mark.parametrize("namespace", ["1team", "team-a", "0", "a" * 63])
def test_namespaces_are_dns_1123_labels_and_may_start_with_a_digit(validator, namespace):
    manifest = build_manifest(VARIANTS["cpu-two-pods"], "train-abc123", namespace, [])
    assert manifest["metadata"]["namespace"] == namespace and not list(validator.iter_errors(manifest))


@pytest.mark.parametrize("field", ["cpu", "memory", "shm_size"])
@pytest.mark.parametrize("text", ["16K", "1mm", "5Gi5", "1.2.3", "-1"])
def test_bad_resource_quantities_fail_naming_the_value(field, text):
    with pytest.raises(
        ManifestError, match=rf"{field} must be a Kubernetes quantity like .*got {re.escape(repr(text))}"
    ):
        build_manifest(config(**{field: text}), "train-abc123", "team-a", [])


def test_quantities_in_every_accepted_form_make_valid_manifests(validator):
    for text in ("500m", "1.5", "1e3", "2.5Gi", "100u", "1E"):
        manifest = build_manifest(config(cpu=text, memory=text, shm_size=text), "train-abc123", "team-a", [])
        assert not list(validator.iter_errors(manifest)), text


def test_schema_check_catches_what_the_api_server_would_prune(validator):
    manifest = build_manifest(VARIANTS["cpu-two-pods"], "train-abc123", "team-a", [])
    manifest["spec"]["pytorchReplicaSpecs"]["Master"]["replica"] = 1
    manifest["spec"]["runPolicy"]["backoffLimit"] = "three"
    messages = [e.message for e in validator.iter_errors(manifest)]
    assert any("'replica' was unexpected" in m for m in messages)
    assert any("'three' is not of type 'integer'" in m for m in messages)


def test_gpus_are_counted_in_the_accelerators_own_resource():
    manifest = build_manifest(VARIANTS["amd-gpu"], "train-amd", "team-a", [])
    resources = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["amd.com/gpu"] == 2 and "nvidia.com/gpu" not in resources["limits"]


@pytest.mark.parametrize("name, namespace", [("Train", "team-a"), ("train-abc123", "team_a")])
def test_a_bad_name_or_namespace_is_a_manifest_error(name, namespace):
    with pytest.raises(ManifestError, match=r"is not a DNS-1(035|123) label"):
        build_manifest(config(), name, namespace, [])
