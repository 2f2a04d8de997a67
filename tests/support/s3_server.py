"""An S3-compatible server on 127.0.0.1 that checks credentials: moto's server, in its own process.

Neither PyPI nor Debian ships a MinIO or SeaweedFS server binary, so the S3 API is served by
``moto[server]`` (the fallback the project allows). With ``INITIAL_NO_AUTH_ACTION_COUNT`` set, moto
authenticates every request after the first few against the IAM users it holds, as a real S3 or
MinIO would: a request signed with unknown keys is refused with 403. The first requests create the
user whose access key the tests mount as KFP's ``mlpipeline-minio-artifact`` Secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from components.common.processes import free_port

# Requests served before authentication starts: create the user, its key, and give it S3.
SETUP_REQUESTS = 3
S3_ACCESS = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


class S3Server:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="s3-server-")
        self.access_key = self.secret_key = ""

    def start(self) -> S3Server:
        log = open(Path(self._tmp.name) / "server.log", "wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        self._create_user()
        return self

    def _create_user(self) -> None:
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="pipeline-runner")
        key = iam.create_access_key(UserName="pipeline-runner")["AccessKey"]
        iam.put_user_policy(UserName="pipeline-runner", PolicyName="s3", PolicyDocument=S3_ACCESS)
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self):
        """A boto3 S3 client with the valid key (to set up buckets and read what the code wrote)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._tmp.cleanup()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def mount_secret(directory: Path, access_key: str, secret_key: str) -> Path:
    """What kubelet makes of KFP's mlpipeline-minio-artifact Secret mounted as a volume: one file a key."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "accesskey").write_text(access_key)
    (directory / "secretkey").write_text(secret_key)
    return directory
