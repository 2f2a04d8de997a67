"""The artifact store settings, end to end: from ClusterSettings through the PyTorchJob manifest to a
replica reading and writing minio:// with KFP's Secret mounted (or missing) where the manifest says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.pytorchjob_train.manifest import build_manifest
from components.pytorchjob_train.step import default_job_config
from pipelines.kubernetes_settings import settings_from_dict
from tests.support.s3_server import mount_secret

ROOT = Path(__file__).resolve().parents[1]
REPLICA = """
import sys
from pathlib import Path
from components.common.storage import StorageError, local_copy, publish

source = Path(sys.argv[1])
try:
    publish(source, sys.argv[2])
    with local_copy(sys.argv[2]) as fetched:
        print((fetched / "weights.txt").read_text())
except StorageError as error:
    sys.exit(f"StorageError: {error}")
"""


def replica_pod(settings) -> tuple[dict[str, str], dict]:
    """The Master replica's environment and its pod spec, as the pytorchjob-train step builds them."""
    config = default_job_config(
        "trainer:1",
        1,
        env=settings.replica_environment,
        secret_volumes=settings.gcs_secret_volumes,
        optional_secret_volumes=settings.artifact_store_secret_volumes,
    )
    config.validate()
    manifest = build_manifest(config, "train-abc", "team-a", [])
    pod = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    [container] = pod["containers"]
    return {e["name"]: e["value"] for e in container["env"]}, pod


def run_replica(environment: dict[str, str], tmp_path: Path, uri: str) -> subprocess.CompletedProcess:
    source = tmp_path / "model"
    source.mkdir(exist_ok=True)
    (source / "weights.txt").write_text("trained")
    ambient = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KFP_TORCH_S3_"))}
    return subprocess.run(
        [sys.executable, "-c", REPLICA, str(source), uri],
        env={**ambient, **environment},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_a_replica_reaches_minio_with_the_secret_mounted_where_the_manifest_says(
    s3, tmp_path, no_ambient_aws_credentials
):
    mount = tmp_path / "secrets" / "artifact-store"
    settings = settings_from_dict({"artifact_store_endpoint": s3.url, "artifact_store_mount_path": str(mount)})
    environment, pod = replica_pod(settings)
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "mlpipeline-minio-artifact", "optional": True}
    [mounted] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mounted["mountPath"] == str(mount) and mounted["readOnly"] is True

    mount_secret(mount, s3.access_key, s3.secret_key)  # what kubelet does with the Secret
    done = run_replica(environment, tmp_path, "minio://mlpipeline/v2/artifacts/p/run-1/pytorchjob-train/model")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trained"
    assert s3.access_key not in str(environment) and s3.secret_key not in str(environment)


def test_without_the_secret_the_replica_starts_and_names_what_is_missing(s3, tmp_path, no_ambient_aws_credentials):
    mount = tmp_path / "secrets" / "artifact-store"
    mount.mkdir(parents=True)  # an optional Secret that does not exist: kubelet mounts an empty directory
    environment, _ = replica_pod(
        settings_from_dict({"artifact_store_endpoint": s3.url, "artifact_store_mount_path": str(mount)})
    )
    done = run_replica(environment, tmp_path, "minio://mlpipeline/v2/artifacts/p/run-2/pytorchjob-train/model")
    assert done.returncode == 1
    assert "no credentials; mount the artifact store's Secret" in done.stderr


def test_without_the_secret_boto3s_own_credentials_are_used(s3, tmp_path, no_ambient_aws_credentials):
    """IRSA or AWS_* variables on the pods: the empty optional mount does not get in their way."""
    mount = tmp_path / "secrets" / "artifact-store"
    mount.mkdir(parents=True)
    environment, _ = replica_pod(
        settings_from_dict({"artifact_store_endpoint": s3.url, "artifact_store_mount_path": str(mount)})
    )
    environment |= {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    done = run_replica(environment, tmp_path, "s3://mlpipeline/v2/artifacts/p/run-3/pytorchjob-train/model")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trained"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {"KFP_TORCH_S3_CREDENTIALS_DIR": "/var/secrets/artifact-store"}),
        ({"artifact_store_secret": ""}, {}),
        (
            {"gcs_credentials_secret": "gcs-reader", "artifact_store_region": "eu-west-1"},
            {
                "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcs/key.json",
                "KFP_TORCH_S3_CREDENTIALS_DIR": "/var/secrets/artifact-store",
                "KFP_TORCH_S3_REGION": "eu-west-1",
            },
        ),
    ],
)
def test_the_replicas_environment_holds_paths_and_endpoints_only(settings, expected):
    environment, pod = replica_pod(settings_from_dict(settings))
    assert environment == expected
