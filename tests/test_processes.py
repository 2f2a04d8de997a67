"""components.common.processes: stopping a process group, and a free port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from components.common.processes import free_port, stop_process_group

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def started(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period():
    process = started(IGNORES_SIGTERM)
    stop_process_group(process, grace_seconds=0.5)
    assert process.returncode == -signal.SIGKILL


def test_a_group_that_honours_sigterm_ends_with_it():
    process = started("import time; print('ready', flush=True); time.sleep(60)")
    stop_process_group(process, grace_seconds=30)
    assert process.returncode == -signal.SIGTERM


def test_a_process_that_has_exited_is_left_alone():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    process.wait()
    stop_process_group(process, grace_seconds=0.5)
    assert process.returncode == 3


def test_a_free_port_can_be_listened_on():
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()
