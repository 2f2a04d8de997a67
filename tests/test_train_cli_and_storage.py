"""The train CLI that PyTorchJob replicas run: artifacts by gs:// URI, and the launcher environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from components.common.spec import ONNX_FILE, SPEC_FILE, WEIGHTS_FILE, load_spec
from components.common.storage import local_copy, publish
from components.train.distributed import DistributedContext, context_from_env
from pipelines.demo_data import prepare_digits_repo


@pytest.fixture
def emulated_gcs(fake_gcs, monkeypatch):
    """gcsfs and google-cloud-storage talk to the fake server through STORAGE_EMULATOR_HOST."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    bucket = "artifacts-cli"
    if fake_gcs.client().lookup_bucket(bucket) is None:
        fake_gcs.client().create_bucket(bucket)
    return f"gs://{bucket}"


def test_train_cli_reads_and_writes_gs_uris(digits_dir, emulated_gcs, fake_gcs, tmp_path):
    publish(digits_dir, f"{emulated_gcs}/run-1/dataset")
    model_uri = f"{emulated_gcs}/run-1/model"
    done = subprocess.run(
        [sys.executable, "-m", "components.train.cli", "--dataset", f"{emulated_gcs}/run-1/dataset"]
        + ["--model", model_uri, "--epochs", "1", "--augment", "false", "--dataset-info", '{"commit": "abc"}'],
        capture_output=True,
        text=True,
        env={**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    blobs = [b.name for b in fake_gcs.client().list_blobs("artifacts-cli", prefix="run-1/model/")]
    assert sorted(blobs) == ["run-1/model/" + name for name in (ONNX_FILE, SPEC_FILE, WEIGHTS_FILE)]
    with local_copy(model_uri) as fetched:
        spec = load_spec(fetched)
    assert spec.dataset == {"commit": "abc"} and spec.classes == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, DistributedContext(0, 1, 0)),
        ({"WORLD_SIZE": "1"}, DistributedContext(0, 1, 0)),
        (  # a PyTorchJob pod without nprocPerNode: the operator's variables, no LOCAL_RANK
            {"WORLD_SIZE": "4", "RANK": "3", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"},
            DistributedContext(3, 4, 0),
        ),
        (  # what the Training Operator sets with nprocPerNode "1" (PET_NPROC_PER_NODE is always set)
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "j-master-0", "MASTER_PORT": "23456"}
            | {"PET_NPROC_PER_NODE": "1", "PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "j-master-0"},
            DistributedContext(1, 2, 0),
        ),
        (  # torchrun (also inside a pod with nprocPerNode, after it read the PET_* variables)
            {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "MASTER_ADDR": "a", "MASTER_PORT": "1"}
            | {"PET_NPROC_PER_NODE": "4"},
            DistributedContext(5, 8, 1),
        ),
    ],
)
def test_context_from_launcher_environment(env, expected):
    assert context_from_env(env) == expected


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WORLD_SIZE": "two"}, r"WORLD_SIZE='two' is not an integer"),
        (
            {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"},
            r"RANK must be in \[0, WORLD_SIZE=2\)",
        ),
        ({"WORLD_SIZE": "2", "RANK": "0"}, r"MASTER_ADDR, MASTER_PORT is not set"),
        ({"PET_NPROC_PER_NODE": "4", "PET_NNODES": "2"}, r"PET_NPROC_PER_NODE=4 but LOCAL_RANK is not set"),
    ],
)
def test_bad_launcher_environment_is_named(env, message):
    with pytest.raises(ValueError, match=message):
        context_from_env(env)


def test_demo_data_is_reused_on_a_second_run(digits_repo, tmp_path):
    """Reused, not rebuilt: the same commit, and not a file of the repository or the remote rewritten."""
    from pathlib import Path

    def stamps(root: str | Path) -> dict[str, int]:
        paths = [p for p in Path(root).rglob("*") if p.is_file() and not {".git", "tmp"} & set(p.parts)]
        return {str(p): p.stat().st_mtime_ns for p in paths}

    before = stamps(digits_repo.repo_url) | stamps(digits_repo.remote_dir)
    again = prepare_digits_repo(os.path.dirname(digits_repo.repo_url))
    assert again == digits_repo
    assert stamps(digits_repo.repo_url) | stamps(digits_repo.remote_dir) == before


def test_local_copy_of_a_single_file_uri(emulated_gcs, fake_gcs, tmp_path):
    """A checkpoint imported with dsl.importer is one object, not a directory."""
    bucket = fake_gcs.client().bucket("artifacts-cli")
    bucket.blob("weights/resnet18-f37072fd.pth").upload_from_string(b"not really weights")
    with local_copy(f"{emulated_gcs}/weights/resnet18-f37072fd.pth") as fetched:
        assert fetched.is_file() and fetched.name == "resnet18-f37072fd.pth"
        assert fetched.read_bytes() == b"not really weights"
    assert not fetched.exists()  # a temporary copy
