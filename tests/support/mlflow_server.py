"""A real MLflow tracking server (with its Model Registry) on 127.0.0.1: SQLite store, basic authentication.

``mlflow server`` needs the full ``mlflow`` package (SQLAlchemy, Alembic, Flask, pandas, pyarrow, ...), while
the library and its components image use ``mlflow-skinny`` (the client alone). The server therefore runs from
its own virtual environment, made once by :func:`server_python` (``mlflow[auth]`` at the version of the
installed ``mlflow-skinny``, so client and server match) under ``.local/mlflow-server-venv`` or
``$KFP_TORCH_MLFLOW_SERVER_VENV``; the test venv keeps exactly what the components image has, and a client
call that only works with the full package fails here as it would in a cluster.

The server runs MLflow's ``basic-auth`` app: every request needs the admin's user and password (401
without), which is how the tests see credentials reach MLflow from a mounted Secret.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from components.common.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_ENV = "KFP_TORCH_MLFLOW_SERVER_VENV"
ADMIN = "admin"


def server_venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or REPO_ROOT / ".local" / "mlflow-server-venv")


def server_python() -> Path:
    """The server venv's python, made (once, under a lock) when missing or at another MLflow version."""
    version = importlib.metadata.version("mlflow-skinny")
    venv = server_venv()
    marker = venv / f".installed-mlflow-{version}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".mlflow-server-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"mlflow[auth]=={version}"],
                check=True,
                timeout=900,
            )
            marker.touch()
    return venv / "bin" / "python"


class _Preparation:
    """:func:`server_python` in a background thread, so that making the venv (a minute and more on a fresh
    machine) overlaps the tests that run before the MLflow ones; they then wait on its lock, not on pip."""

    def __init__(self):
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._prepare, name="mlflow-server-venv")
            self._thread.start()

    @staticmethod
    def _prepare() -> None:
        with contextlib.suppress(Exception):  # the server fixture's own call then fails, with the cause
            server_python()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


mlflow_server_venv = _Preparation()


class MlflowServer:
    def __init__(self, password: str = "s3cret-Adm1n-pa55"):
        self.password = password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="mlflow-server-")
        self.root = Path(self._tmp.name)

    def __enter__(self) -> MlflowServer:
        python = server_python()
        auth = self.root / "auth.ini"
        auth.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
            f"admin_username = {ADMIN}\n"
            f"admin_password = {self.password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 300\n"  # a password hash per request costs seconds on a busy machine
        )
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "MLFLOW_AUTH_CONFIG_PATH": str(auth),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        }
        self.log = self.root / "server.log"
        command = [
            str(python), "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--default-artifact-root", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--app-name", "basic-auth",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return self
            except urllib.error.HTTPError:
                return self  # answering (with 401): up
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"mlflow server did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._tmp.cleanup()
