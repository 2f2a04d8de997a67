"""Run training under ``torchrun --nproc_per_node=N`` on this machine.

The same DDP code path a distributed job's replicas run, with Gloo between local processes
(NCCL when the machine has GPUs): the library's train CLI, or a user's own
command (``--no-python``). What ``kfp.local`` and ``make run --distributed`` use.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from components.common.processes import stop_process_group

STOP_SECONDS = 10  # torchrun passes SIGTERM on to its workers; what has not exited by then is killed
EXCEPTION_LINE = re.compile(r"^\s*(\[rank\d+\]:\s*)?[\w.]*(Error|Exception|Interrupt)\b: ")


class LocalLaunchError(RuntimeError):
    pass


def library_training(train_args: Sequence[str]) -> list[str]:
    """The program torchrun starts for the library's own training."""
    return ["-m", "components.train.cli", *train_args]


def own_command(command: Sequence[str]) -> list[str]:
    """The program torchrun starts for a user's command (any executable, not only Python)."""
    return ["--no-python", *command]


def torchrun_command(
    nproc_per_node: int | str, program: Sequence[str], rendezvous: Sequence[str] = ("--standalone",)
) -> list[str]:
    """``python -m torch.distributed.run`` for ``program``; by default a private rendezvous on a free port.
    ``nproc_per_node`` is a number, or a word torchrun takes (auto, cpu, gpu), as a job's controller may set it."""
    words = ("auto", "cpu", "gpu")
    valid = nproc_per_node in words if isinstance(nproc_per_node, str) else isinstance(nproc_per_node, int)
    if not valid or (isinstance(nproc_per_node, int) and nproc_per_node < 1):
        raise ValueError(f"nproc_per_node must be an integer >= 1 or one of {', '.join(words)}, got {nproc_per_node!r}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        f"--nproc-per-node={nproc_per_node}",
        *program,
    ]


def run_torchrun(
    nproc_per_node: int | str,
    program: Sequence[str],
    timeout_seconds: float,
    echo: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
    rendezvous: Sequence[str] = ("--standalone",),
) -> float:
    """Run ``program`` under torchrun; stream its output through ``echo``; return seconds until training
    starts (the library's "starting training" line, or the end for other programs).

    Raises LocalLaunchError with the last lines of output when a process fails or the
    timeout passes. The whole process group is stopped on failure, timeout or SIGTERM.
    """
    from components.common.resources import cpus_each

    # Share the pod's CPUs between the processes rather than oversubscribe them (torchrun's default is 1 each).
    processes = nproc_per_node if isinstance(nproc_per_node, int) else 1  # torchrun's word: it decides
    threads = os.environ.get("OMP_NUM_THREADS") or str(cpus_each(processes))
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    # "python" in a command means this environment's interpreter, as it does in the images.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    began = time.monotonic()
    process = subprocess.Popen(
        torchrun_command(nproc_per_node, program, rendezvous),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    previous = signal.getsignal(signal.SIGTERM)

    def stop(*_):
        stop_process_group(process, STOP_SECONDS)
        raise SystemExit(f"terminated: torchrun (pid {process.pid}) stopped")

    signal.signal(signal.SIGTERM, stop)
    tail: list[str] = []
    errors: list[str] = []  # "SomeError: message" lines: the root cause, which torchrun's summary omits
    first_step = None
    try:
        deadline = began + timeout_seconds
        for line in _lines_until(process, deadline):
            echo(line)
            tail = (tail + [line])[-40:]
            if EXCEPTION_LINE.match(line):
                errors.append(line)
            if first_step is None and "starting training" in line:
                first_step = time.monotonic() - began
        if process.poll() is None:
            stop_process_group(process, STOP_SECONDS)
            raise LocalLaunchError(
                f"torchrun did not finish within timeout_seconds={timeout_seconds:g}; last output:\n" + "\n".join(tail)
            )
        if process.returncode != 0:
            causes = list(dict.fromkeys(line.strip() for line in errors))  # each rank raises the same one
            raise LocalLaunchError(
                f"torchrun exited with status {process.returncode}: "
                + ("; ".join(causes[-3:]) if causes else "no exception line in the output")
                + "\nlast output:\n"
                + "\n".join(tail[-20:])
            )
    finally:
        stop_process_group(process, STOP_SECONDS)
        signal.signal(signal.SIGTERM, previous)
    return first_step if first_step is not None else time.monotonic() - began


def _lines_until(process: subprocess.Popen, deadline: float):
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                process.wait()
                return
            yield line.rstrip("\n")
