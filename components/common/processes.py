"""Local child processes: stopping one that runs in a session of its own, and a free port for a server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess


def stop_process_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM ``process``'s process group (it was started with ``start_new_session``), then SIGKILL it after
    ``grace_seconds``; returns once the process is reaped. A process that has exited already is left alone."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
