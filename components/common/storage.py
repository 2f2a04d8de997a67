"""Read and write artifact directories by URI: a local path, ``gs://``, ``s3://`` or ``minio://``.

Pods that KFP does not launch itself (PyTorchJob replicas), and the step that collects what they
wrote, get artifact URIs rather than the local paths KFP's launcher provides, so they fetch inputs
and publish outputs here; a notebook lists a run's artifacts and reads its metrics file here
(``list_files``, ``read_bytes``). Each store is reached through the client its operators use:

- ``gs://`` through google-cloud-storage, with Application Default Credentials
  (``GOOGLE_APPLICATION_CREDENTIALS``, GKE Workload Identity).
- ``minio://`` (a default Kubeflow install's artifact store: MinIO, or SeaweedFS in newer
  manifests, both over the S3 API) and ``s3://`` through boto3, found as KFP's own launcher finds
  them: the endpoint in ``KFP_TORCH_S3_ENDPOINT`` (for ``minio://`` KFP's
  ``http://minio-service.kubeflow:9000`` by default; for ``s3://`` AWS, or ``AWS_ENDPOINT_URL``),
  and the credentials from the ``mlpipeline-minio-artifact`` Secret mounted as files
  (``accesskey``, ``secretkey``) in ``KFP_TORCH_S3_CREDENTIALS_DIR``, else boto3's own chain
  (``AWS_ACCESS_KEY_ID``, IRSA, instance profiles). Credentials never travel as values.

Object keys are untrusted: a key that would land outside the target directory is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

SCHEMES = ("gs", "s3", "minio")
S3_ENDPOINT_ENV = "KFP_TORCH_S3_ENDPOINT"
S3_REGION_ENV = "KFP_TORCH_S3_REGION"
S3_CREDENTIALS_DIR_ENV = "KFP_TORCH_S3_CREDENTIALS_DIR"
CREDENTIAL_FILES = ("accesskey", "secretkey")  # the keys of KFP's mlpipeline-minio-artifact Secret
KFP_MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"
KFP_MINIO_REGION = "minio"
TRANSFER_THREADS = 8


class StorageError(RuntimeError):
    """An artifact URI that cannot be read or written; the message names it (never a credential)."""


@dataclass(frozen=True)
class Location:
    scheme: str
    bucket: str
    key: str  # without leading or trailing '/'; '' for the bucket's root

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


def is_remote(uri: str) -> bool:
    return urlsplit(str(uri)).scheme not in ("", "file")


def parse(uri: str) -> Location:
    parts = urlsplit(str(uri))
    if parts.scheme not in SCHEMES:
        raise StorageError(f"artifact URI {uri!r}: scheme {parts.scheme!r} is not one of {', '.join(SCHEMES)}")
    if not parts.netloc:
        raise StorageError(f"artifact URI {uri!r} names no bucket")
    return Location(parts.scheme, parts.netloc, parts.path.strip("/"))


def _local_path(uri: str) -> Path:
    return Path(urlsplit(str(uri)).path if str(uri).startswith("file:") else uri)


def _relative(prefix: str, key: str, uri: str) -> str:
    """``key`` below ``prefix``, refused when it could leave the directory it is copied into."""
    relative = key[len(prefix) :]
    parts = PurePosixPath(relative).parts
    if not relative or relative.startswith("/") or ".." in parts or "\x00" in relative:
        raise StorageError(f"object {key!r} under {uri} has a name that would leave the target directory")
    return relative


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding what ``uri`` holds: a directory or a single object (the path itself when local)."""
    if not is_remote(uri):
        yield _local_path(uri)
        return
    location = parse(uri)
    store = _store(location)
    prefix = f"{location.key}/" if location.key else ""
    with tempfile.TemporaryDirectory(prefix="artifact-") as tmp:
        keys = [key for key in store.list(location.bucket, prefix) if not key.endswith("/")]
        if keys:
            target = Path(tmp) / "data"
            jobs = [(key, target / _relative(prefix, key, uri)) for key in keys]
            for _, path in jobs:
                path.parent.mkdir(parents=True, exist_ok=True)
            _parallel(lambda job: store.download(location.bucket, job[0], job[1]), jobs)
        elif location.key and store.exists(location.bucket, location.key):  # e.g. a checkpoint from dsl.importer
            target = Path(tmp) / PurePosixPath(location.key).name
            store.download(location.bucket, location.key, target)
        else:
            raise StorageError(f"nothing found at {uri}")
        yield target


def publish(local_dir: Path, uri: str, last: str | None = None) -> None:
    """Copy ``local_dir`` to ``uri``; ``last`` (a file name) is written after everything else, so
    a reader that waits for it never sees a half-written directory."""
    if not is_remote(uri):
        destination = _local_path(uri)
        if destination.resolve() != Path(local_dir).resolve():
            shutil.copytree(local_dir, destination, dirs_exist_ok=True)
        return
    location = parse(uri)
    store = _store(location)
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())

    def upload(path: Path) -> None:
        key = "/".join(part for part in (location.key, path.relative_to(local_dir).as_posix()) if part)
        store.upload(path, location.bucket, key)

    _parallel(upload, [p for p in files if p.name != last])
    for path in (p for p in files if p.name == last):
        upload(path)


def list_files(uri: str) -> list[str]:
    """The files below the directory ``uri``, at any depth, as sorted '/'-separated paths relative to it.

    ``[]`` when there are none. In an object store a directory is a key prefix: ``minio://b/runs/1``
    holds the objects whose keys start with ``runs/1/`` (not ``runs/10/``). A key that would name a
    path outside ``uri`` is refused.
    """
    if not is_remote(uri):
        root = _local_path(uri)
        files = root.rglob("*") if root.is_dir() else []
        return sorted(path.relative_to(root).as_posix() for path in files if path.is_file())
    location = parse(uri)
    prefix = f"{location.key}/" if location.key else ""
    keys = _store(location).list(location.bucket, prefix)
    return sorted(_relative(prefix, key, uri) for key in keys if not key.endswith("/"))


def read_bytes(uri: str) -> bytes:
    """The content of the single file or object at ``uri``."""
    if not is_remote(uri):
        try:
            return _local_path(uri).read_bytes()
        except OSError as error:
            raise StorageError(f"cannot read {uri}: {error.strerror or error}") from None
    location = parse(uri)
    if not location.key:
        raise StorageError(f"artifact URI {uri!r} names a bucket, not an object")
    return _store(location).read(location.bucket, location.key)


def _parallel(function, items: list) -> None:
    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS) as pool:
        for _ in pool.map(function, items):  # re-raises the first failure
            pass


# --- stores ---------------------------------------------------------------------------------------


def _store(location: Location):
    return _GcsStore() if location.scheme == "gs" else _S3Store(location.scheme)


class _GcsStore:
    """google-cloud-storage; ``STORAGE_EMULATOR_HOST`` points it at an emulator."""

    def __init__(self):
        from google.cloud import storage

        self.client = storage.Client()

    def _explain(self, error: Exception, what: str) -> StorageError:
        return StorageError(f"{what}: {type(error).__name__}: {getattr(error, 'message', error)}")

    def list(self, bucket: str, prefix: str) -> list[str]:
        try:
            return [blob.name for blob in self.client.list_blobs(bucket, prefix=prefix)]
        except Exception as error:
            raise self._explain(error, f"cannot list gs://{bucket}/{prefix}") from None

    def exists(self, bucket: str, key: str) -> bool:
        try:
            return self.client.bucket(bucket).blob(key).exists()
        except Exception as error:
            raise self._explain(error, f"cannot read gs://{bucket}/{key}") from None

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return self.client.bucket(bucket).blob(key).download_as_bytes()
        except Exception as error:
            raise self._explain(error, f"cannot read gs://{bucket}/{key}") from None

    def download(self, bucket: str, key: str, path: Path) -> None:
        try:
            self.client.bucket(bucket).blob(key).download_to_filename(str(path))
        except Exception as error:
            raise self._explain(error, f"cannot download gs://{bucket}/{key}") from None

    def upload(self, path: Path, bucket: str, key: str) -> None:
        try:
            self.client.bucket(bucket).blob(key).upload_from_filename(str(path))
        except Exception as error:
            raise self._explain(error, f"cannot upload to gs://{bucket}/{key}") from None


def s3_settings(scheme: str) -> dict:
    """boto3 client arguments for ``scheme``: endpoint, region and (when a Secret is mounted) credentials."""
    endpoint = os.environ.get(S3_ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get(S3_REGION_ENV) or None
    if scheme == "minio":
        endpoint = endpoint or KFP_MINIO_ENDPOINT
        region = region or KFP_MINIO_REGION
    settings: dict = {"endpoint_url": endpoint, "region_name": region}
    directory = os.environ.get(S3_CREDENTIALS_DIR_ENV)
    # The pipelines mount the Secret optionally: an empty directory means the namespace has none, and
    # boto3's own chain (AWS_* variables, IRSA, an instance profile) is tried instead.
    if directory and any((Path(directory) / name).exists() for name in CREDENTIAL_FILES):
        values = []
        for name in CREDENTIAL_FILES:
            path = Path(directory) / name
            try:
                values.append(path.read_text().strip())
            except OSError:
                raise StorageError(
                    f"{S3_CREDENTIALS_DIR_ENV}={directory} has no readable {name!r}: mount the artifact store's "
                    f"Secret there (KFP's mlpipeline-minio-artifact holds {' and '.join(CREDENTIAL_FILES)})"
                ) from None
            if not values[-1]:
                raise StorageError(f"{path} is empty")
        settings["aws_access_key_id"], settings["aws_secret_access_key"] = values
    return settings


class _S3Store:
    """boto3 against AWS S3 or an S3-compatible endpoint (MinIO, SeaweedFS)."""

    def __init__(self, scheme: str):
        import boto3
        from botocore.config import Config

        settings = s3_settings(scheme)
        self.scheme, self.endpoint = scheme, settings["endpoint_url"] or "AWS S3"
        path_style = scheme == "minio" or settings["endpoint_url"] is not None
        self.client = boto3.session.Session().client(
            "s3",
            config=Config(
                s3={"addressing_style": "path" if path_style else "auto"},
                retries={"mode": "standard", "max_attempts": 5},
            ),
            **settings,
        )

    def _explain(self, error: Exception, what: str) -> StorageError:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(error, NoCredentialsError):
            return StorageError(
                f"{what} at {self.endpoint}: no credentials; mount the artifact store's Secret and set "
                f"{S3_CREDENTIALS_DIR_ENV} to its directory (the pipelines' artifact_store settings do), or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            return StorageError(f"{what} at {self.endpoint}: {status} {code}".rstrip())
        return StorageError(f"{what} at {self.endpoint}: {type(error).__name__}: {error}")

    def list(self, bucket: str, prefix: str) -> list[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [entry["Key"] for page in pages for entry in page.get("Contents", [])]
        except Exception as error:
            raise self._explain(error, f"cannot list {self.scheme}://{bucket}/{prefix}") from None

    def exists(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self._explain(error, f"cannot read {self.scheme}://{bucket}/{key}") from None
        except Exception as error:
            raise self._explain(error, f"cannot read {self.scheme}://{bucket}/{key}") from None

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            raise self._explain(error, f"cannot read {self.scheme}://{bucket}/{key}") from None

    def download(self, bucket: str, key: str, path: Path) -> None:
        try:
            self.client.download_file(bucket, key, str(path))
        except Exception as error:
            raise self._explain(error, f"cannot download {self.scheme}://{bucket}/{key}") from None

    def upload(self, path: Path, bucket: str, key: str) -> None:
        try:
            self.client.upload_file(str(path), bucket, key)
        except Exception as error:
            raise self._explain(error, f"cannot upload to {self.scheme}://{bucket}/{key}") from None
