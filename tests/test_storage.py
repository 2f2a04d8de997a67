"""Artifacts by URI: minio:// and s3:// against a real S3-compatible server, gs:// through google-cloud-storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from components.common.spec import SPEC_FILE, load_spec
from components.common.storage import (
    S3_CREDENTIALS_DIR_ENV,
    S3_ENDPOINT_ENV,
    StorageError,
    list_files,
    local_copy,
    publish,
    read_bytes,
)
from tests.support.s3_server import mount_secret

ROOT = Path(__file__).resolve().parents[1]


def sample_directory(root: Path) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "weights.pt").write_bytes(os.urandom(20000))
    (root / "nested" / "deeper" / "notes.txt").write_text("hello")
    (root / SPEC_FILE).write_text("{}")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_minio_round_trip_with_kfps_secret_mounted(kfp_minio, tmp_path):
    source = sample_directory(tmp_path / "model")
    uri = "minio://mlpipeline/v2/artifacts/pipeline/run-1/train/model"
    publish(source, uri, last=SPEC_FILE)
    keys = [o["Key"] for o in kfp_minio.client().list_objects_v2(Bucket="mlpipeline", Prefix="v2/")["Contents"]]
    assert sorted(keys) == [f"v2/artifacts/pipeline/run-1/train/model/{name}" for name in sorted(tree(source))]
    with local_copy(uri) as fetched:
        assert tree(fetched) == tree(source)
    with local_copy(uri + "/weights.pt") as single:  # one object, as dsl.importer hands a checkpoint
        assert single.is_file() and single.read_bytes() == (source / "weights.pt").read_bytes()


def test_s3_with_the_aws_variables_and_an_s3_compatible_endpoint(s3, monkeypatch, tmp_path, no_ambient_aws_credentials):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    source = sample_directory(tmp_path / "dataset")
    publish(source, "s3://mlpipeline/datasets/digits")
    with local_copy("s3://mlpipeline/datasets/digits/") as fetched:
        assert tree(fetched) == tree(source)


def test_rejected_credentials_name_the_uri_and_endpoint_never_the_key(
    s3, monkeypatch, tmp_path, no_ambient_aws_credentials
):
    monkeypatch.setenv(S3_ENDPOINT_ENV, s3.url)
    monkeypatch.setenv(S3_CREDENTIALS_DIR_ENV, str(mount_secret(tmp_path / "secret", "AKIAWRONG", "s3cr3t-value")))
    with pytest.raises(StorageError) as raised:
        with local_copy("minio://mlpipeline/v2/artifacts"):
            pass
    message = str(raised.value)
    assert "cannot list minio://mlpipeline/v2/artifacts/" in message and s3.url in message and "403" in message
    assert "AKIAWRONG" not in message and "s3cr3t-value" not in message


def test_no_credentials_at_all_says_where_they_are_looked_for(s3, monkeypatch, no_ambient_aws_credentials):
    monkeypatch.setenv(S3_ENDPOINT_ENV, s3.url)
    with pytest.raises(StorageError, match=r"no credentials; mount the artifact store's Secret and set KFP_TORCH_S3"):
        with local_copy("minio://mlpipeline/anything"):
            pass


def test_a_secret_without_its_keys_is_named(s3, monkeypatch, tmp_path, no_ambient_aws_credentials):
    mounted = tmp_path / "secret"
    mounted.mkdir()
    (mounted / "accesskey").write_text("AKIA")
    monkeypatch.setenv(S3_CREDENTIALS_DIR_ENV, str(mounted))
    with pytest.raises(StorageError, match=rf"{S3_CREDENTIALS_DIR_ENV}={mounted} has no readable 'secretkey'"):
        with local_copy("minio://mlpipeline/anything"):
            pass


def test_nothing_at_the_uri_is_named(kfp_minio):
    with pytest.raises(StorageError, match=r"nothing found at minio://mlpipeline/no/such/model"):
        with local_copy("minio://mlpipeline/no/such/model"):
            pass


def test_an_object_key_that_would_leave_the_directory_is_refused(kfp_minio, tmp_path):
    escape = f"escape-{uuid.uuid4().hex}.txt"
    client = kfp_minio.client()
    client.put_object(Bucket="mlpipeline", Key="hostile/model/weights.pt", Body=b"w")
    client.put_object(Bucket="mlpipeline", Key=f"hostile/model/../../{escape}", Body=b"x")
    with pytest.raises(StorageError, match=rf"'hostile/model/\.\./\.\./{escape}' .* would leave the target"):
        with local_copy("minio://mlpipeline/hostile/model"):
            pass
    assert not (Path(tempfile.gettempdir()) / escape).exists()  # where '../../' from the copy would land


@pytest.mark.parametrize(
    "uri, message", [("ftp://host/x", r"scheme 'ftp' is not one of gs, s3, minio"), ("s3:///x", "no bucket")]
)
def test_bad_uris_are_named(uri, message):
    with pytest.raises(StorageError, match=message):
        with local_copy(uri):
            pass


def test_files_under_a_prefix_are_listed_and_read_in_minio(kfp_minio):
    client = kfp_minio.client()
    run = "v2/artifacts/pytorch-training/run-1"
    for key in (f"{run}/evaluate/salt-a/metrics", f"{run}/train/model/weights.pt", f"{run}0/evaluate/metrics"):
        client.put_object(Bucket="mlpipeline", Key=key, Body=f"content of {key}".encode())
    assert list_files(f"minio://mlpipeline/{run}") == ["evaluate/salt-a/metrics", "train/model/weights.pt"]
    assert list_files(f"minio://mlpipeline/{run}/evaluate/") == ["salt-a/metrics"]  # not run-10's
    assert list_files(f"minio://mlpipeline/{run}/no-such-task") == []
    uri = f"minio://mlpipeline/{run}/evaluate/salt-a/metrics"
    assert read_bytes(uri) == f"content of {run}/evaluate/salt-a/metrics".encode()
    with pytest.raises(StorageError, match=rf"cannot read minio://mlpipeline/{run}/evaluate/metrics at .* 404"):
        read_bytes(f"minio://mlpipeline/{run}/evaluate/metrics")
    with pytest.raises(StorageError, match=r"names a bucket, not an object"):
        read_bytes("minio://mlpipeline/")
    client.put_object(Bucket="mlpipeline", Key="listed/run/../../outside", Body=b"x")
    with pytest.raises(StorageError, match=r"'listed/run/\.\./\.\./outside' .* would leave the target"):
        list_files("minio://mlpipeline/listed/run")


def test_files_under_a_prefix_are_listed_and_read_in_gcs(fake_gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    bucket = fake_gcs.client().lookup_bucket("listing") or fake_gcs.client().create_bucket("listing")
    for name in ("root/run-1/evaluate/salt/metrics", "root/run-1/evaluate/salt/executor-logs", "root/run-2/x"):
        bucket.blob(name).upload_from_string(f"content of {name}")
    assert list_files("gs://listing/root/run-1") == ["evaluate/salt/executor-logs", "evaluate/salt/metrics"]
    assert list_files("gs://listing/root/run-3") == []
    assert read_bytes("gs://listing/root/run-1/evaluate/salt/metrics") == b"content of root/run-1/evaluate/salt/metrics"
    with pytest.raises(StorageError, match=r"cannot read gs://listing/root/run-1/missing: NotFound"):
        read_bytes("gs://listing/root/run-1/missing")


def test_files_under_a_local_directory_are_listed_and_read(tmp_path):
    source = sample_directory(tmp_path / "run")
    assert list_files(str(source)) == sorted(tree(source))
    assert list_files(f"file://{source}") == sorted(tree(source))
    assert list_files(str(tmp_path / "absent")) == [] and list_files(str(source / "weights.pt")) == []
    assert read_bytes(str(source / "nested/deeper/notes.txt")) == b"hello"
    assert read_bytes(f"file://{source}/nested/deeper/notes.txt") == b"hello"
    with pytest.raises(StorageError, match=rf"cannot read {tmp_path}/run/absent.json: No such file"):
        read_bytes(str(source / "absent.json"))


def test_gs_goes_through_google_cloud_storage(fake_gcs, tmp_path):
    """A fresh process: the round trip works and gcsfs is never imported."""
    if fake_gcs.client().lookup_bucket("artifacts-storage") is None:
        fake_gcs.client().create_bucket("artifacts-storage")
    source = sample_directory(tmp_path / "model")
    script = (
        "import json, sys; from pathlib import Path; from components.common.storage import local_copy, publish; "
        "publish(Path(sys.argv[1]), 'gs://artifacts-storage/run/model', last='spec.json'); "
        "f = local_copy('gs://artifacts-storage/run/model'); p = f.__enter__(); "
        "print(json.dumps({'files': sorted(q.relative_to(p).as_posix() for q in p.rglob('*') if q.is_file()), "
        "'gcsfs': 'gcsfs' in sys.modules, 'google.cloud.storage': 'google.cloud.storage' in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "STORAGE_EMULATOR_HOST": fake_gcs.url},
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"files": sorted(tree(source)), "gcsfs": False, "google.cloud.storage": True}


@pytest.mark.slow
def few_digits(digits_dir: Path, out: Path, per_class_and_split: int) -> Path:
    """The first few digits of each class in each split, laid out as the digits are (labels.csv, images/)."""
    rows = (digits_dir / "labels.csv").read_text().splitlines()
    kept, counts = [rows[0]], {}
    for row in rows[1:]:
        filename, label, split = row.split(",")
        counts[label, split] = counts.get((label, split), 0) + 1
        if counts[label, split] <= per_class_and_split:
            kept.append(row)
            (out / filename).parent.mkdir(parents=True, exist_ok=True)
            (out / filename).write_bytes((digits_dir / filename).read_bytes())
    (out / "labels.csv").write_text("\n".join(kept) + "\n")
    (out / "classes.txt").write_bytes((digits_dir / "classes.txt").read_bytes())
    return out


def test_a_replica_trains_from_and_to_minio(kfp_minio, digits_dir, tmp_path):
    """What a PyTorchJob replica does on a default Kubeflow install: read the dataset and write the
    model by minio:// URI, with the artifact store's Secret mounted. A few digits of each class: the
    S3 server takes most of a minute to move all 1,797 files there and back."""
    publish(few_digits(digits_dir, tmp_path / "dataset", 8), "minio://mlpipeline/v2/artifacts/run-2/dvc-pull/dataset")
    model_uri = "minio://mlpipeline/v2/artifacts/run-2/pytorchjob-train/model"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.train.cli",
            "--dataset",
            "minio://mlpipeline/v2/artifacts/run-2/dvc-pull/dataset",
        ]
        + ["--model", model_uri, "--epochs", "1", "--augment", "false"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with local_copy(model_uri) as fetched:
        assert load_spec(fetched).classes == [str(i) for i in range(10)]
        assert (fetched / "model.onnx").is_file()
