"""Run a replica's command until an absolute deadline: the backstop for a job whose controller has none.

    python -m components.train.deadline --until EPOCH_SECONDS -- COMMAND [ARG ...]

Kubeflow Trainer v2.1's TrainJob has no ``activeDeadlineSeconds``, and its ``podTemplateOverrides`` cannot set the
pods' own. When the step that created the TrainJob is killed before its cleanup ran (SIGKILL, a lost node), this
wrapper stops the training at the deadline the step set (the step's timeout plus a margin): the command gets
SIGTERM, then SIGKILL after a grace period, and the wrapper exits 124, as coreutils' ``timeout`` does. The deadline
is a wall-clock time, not a duration, so a container the Job restarts after it exits at once instead of getting
a new window: its Job runs out of retries within seconds and the pods release their GPUs. SIGTERM to the wrapper
(the pod being deleted) is passed on to the command.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from components.common.processes import stop_process_group

EXPIRED = 124  # coreutils timeout's status
GRACE_SECONDS = 30.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: python -m components.train.deadline --until EPOCH_SECONDS -- COMMAND [ARG ...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m components.train.deadline")
    parser.add_argument("--until", type=float, required=True, help="the deadline, in seconds since the epoch")
    until = parser.parse_args(argv[:split]).until
    command = argv[split + 1 :]
    if not command:
        raise SystemExit("deadline: no command after --")
    return run_until(command, until)


def run_until(command: list[str], until: float, grace_seconds: float = GRACE_SECONDS) -> int:
    """The command's exit status, or ``EXPIRED`` when it was stopped at ``until`` (seconds since the epoch)."""
    if time.time() >= until:
        print(f"deadline: the job's deadline ({_stamp(until)}) has passed; not starting {command[0]}", flush=True)
        return EXPIRED
    process = subprocess.Popen(command, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop_process_group(process, grace_seconds))
    try:
        try:
            return process.wait(timeout=max(0.0, until - time.time()))
        except subprocess.TimeoutExpired:
            print(f"deadline: the job's deadline ({_stamp(until)}) has passed; stopping {command[0]}", flush=True)
            stop_process_group(process, grace_seconds)
            return EXPIRED
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_process_group(process, grace_seconds)


def _stamp(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


if __name__ == "__main__":
    sys.exit(main())
