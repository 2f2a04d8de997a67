"""One ``bentoml serve`` process on 127.0.0.1: started, judged ready or failed, stopped.

The ``local`` target's revision. It is ready when BentoML's own ``/readyz`` answers 200, as a Kubernetes
readiness probe on the serving pod would judge it. It has failed when the process exits, when its
service has failed to start twice (BentoML restarts a worker whose service cannot start, forever: the
local form of ``CrashLoopBackOff``), or at the deadline; the failure names the server's own last log
lines. The process runs in a session of its own, so stopping it stops its workers too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from components.common.processes import free_port, stop_process_group
from components.deploy.target import RolloutFailed

READY_PATH = "/readyz"
POLL_SECONDS = 0.2
CRASHES_BEFORE_FAILING = 2  # a service that failed to start, was restarted and failed again
LOG_LINES_SHOWN = 12
STOP_SECONDS = 30
# What BentoML (its worker, through uvicorn's lifespan) logs when the service cannot start; the
# timestamp and worker in front of it tell one crash from the next.
STARTUP_FAILED = re.compile(
    r"^(?P<when>\S+ \[ERROR\] \[[^\]]+\]) (?:Application startup failed|Initializing service error)"
)
CARETS = re.compile(r"^[\s^~]+$")


class BentoServer:
    """``bentoml serve <tag>`` on ``host``:``port`` with ``env`` (its BENTOML_HOME holds the bento), logging
    to ``log_path``; ``cwd`` is the process's directory (not a checkout of this library: the bento's own code
    must be what serves)."""

    def __init__(self, tag: str, env: dict[str, str], log_path: Path, cwd: Path, host: str = "127.0.0.1", port=0):
        self.tag, self.env, self.log_path, self.cwd, self.host = tag, env, Path(log_path), Path(cwd), host
        self.port = port or free_port(host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bentoml", "serve", self.tag, "--host", self.host, "--port", str(self.port)]

    def start(self) -> BentoServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def wait_ready(self, deadline: float) -> str:
        """The base URL once ``/readyz`` answers 200; ``RolloutFailed`` with the server's last lines otherwise."""
        assert self.process is not None, "start the server first"
        began = time.monotonic()
        while True:
            if self._ready():
                return self.url
            code = self.process.poll()
            if code is not None:
                self._fail(f"bentoml serve {self.tag} exited with code {code} before it was ready")
            crashes = self.crashes()
            if crashes >= CRASHES_BEFORE_FAILING:
                self._fail(
                    f"the service of {self.tag} failed to start {crashes} times (BentoML restarts it, and it "
                    "fails again: a crash loop)"
                )
            if time.monotonic() >= deadline:
                self._fail(f"{self.tag} was not ready within {time.monotonic() - began:.0f} s ({self.url}{READY_PATH})")
            time.sleep(POLL_SECONDS)

    def crashes(self) -> int:
        """How many times the service has failed to start, from its log."""
        seen = set()
        for line in self._log_text().splitlines():
            if matched := STARTUP_FAILED.match(line):
                seen.add(matched["when"])
        return len(seen)

    def last_lines(self, count: int = LOG_LINES_SHOWN) -> list[str]:
        """The log's last ``count`` lines, without blank lines, repeats and the carets under traceback lines."""
        kept: list[str] = []
        for line in self._log_text().splitlines():
            line = line.rstrip()
            if line and not CARETS.match(line) and (not kept or kept[-1] != line):
                kept.append(line)
        return kept[-count:]

    def stop(self) -> None:
        """Stop the server and its workers (SIGTERM, then SIGKILL after ``STOP_SECONDS``)."""
        if self.process is not None:
            stop_process_group(self.process, STOP_SECONDS)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{READY_PATH}", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _fail(self, reason: str) -> None:
        self.stop()
        lines = "\n".join(f"  | {line}" for line in self.last_lines())
        raise RolloutFailed(f"{reason}; the server's last log lines ({self.log_path}):\n{lines}")

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
