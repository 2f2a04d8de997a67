"""Run the training pipeline end to end on this machine with ``kfp.local``.

This is what ``make run`` does: prepare the demo data (the digits, versioned
with DVC in a throwaway git repository with a local DVC remote), run
DVC pull → train → evaluate → promotion gate through ``kfp.local``'s
SubprocessRunner, print where every artifact landed and a table of the
metrics, and write the compiled YAML a user would upload to Kubeflow.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from components.deploy.local_target import STATE_DIR_ENV as LOCAL_DEPLOY_DIR_ENV
from pipelines.arguments import check_arguments
from pipelines.compile import compile_all
from pipelines.demo_data import prepare_digits_repo
from pipelines.distributed_training_pipeline import distributed_training_pipeline
from pipelines.training_pipeline import training_pipeline

DEFAULT_WORKDIR = Path(".local")
LOG_FILE = "run.log"
LOCAL_IMAGE_REPOSITORY = "localhost/kfp-torch-lifecycle/image-classifier"  # buildah's local storage
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_STARTED = re.compile(r"Executing task '(?P<task>[^']+)'")
TASK_ENDED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
KFP_LOCAL_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")  # kfp.local's own log lines, not a step's
FAILED_LINES_SHOWN = 25


class StepProgress(io.TextIOBase):
    """Stands in for stdout during a ``kfp.local`` run: every line goes to the run's log file, the
    terminal gets a line as each step starts and ends (and a failed step's last lines)."""

    def __init__(self, log, terminal):
        self.log, self.terminal = log, terminal
        self.pending = ""
        self.started: dict[str, float] = {}
        self.recent: collections.deque[str] = collections.deque(maxlen=FAILED_LINES_SHOWN)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def _line(self, line: str) -> None:
        if started := TASK_STARTED.search(line):
            self.started[started["task"]] = time.monotonic()
            self.recent.clear()
            print(f"  {started['task']} ...", file=self.terminal, flush=True)
        elif ended := TASK_ENDED.search(line):
            seconds = time.monotonic() - self.started.get(ended["task"], time.monotonic())
            print(f"  {ended['task']} {ended['status'].lower()} in {seconds:.1f} s", file=self.terminal, flush=True)
            if ended["status"] != "SUCCESS":
                print("\n".join(f"    | {kept}" for kept in self.recent), file=self.terminal, flush=True)
        elif line.strip() and not KFP_LOCAL_LINE.match(line):
            self.recent.append(line.rstrip())


@contextlib.contextmanager
def quiet_run(log_path: Path) -> Iterator[None]:
    """kfp.local's logs (every task's inputs, outputs and output) into ``log_path``; progress on the terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    with open(log_path, "w") as log:
        sys.stdout = StepProgress(log, terminal)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stdout = terminal


def run_local(arguments: dict, pipeline_root: Path, distributed: bool = False) -> Path:
    """Run a pipeline under ``kfp.local``; return the run's output directory.

    ``distributed`` picks the distributed pipeline with its ``torchrun`` launcher.
    """
    from kfp import local

    # Bentos built by the run go to a store of the run's own, not ~/bentoml.
    os.environ.setdefault("BENTOML_HOME", str((pipeline_root.parent / "bentoml").resolve()))
    # What the deploy step (target local) deploys and `make serve` serves lives beside it.
    os.environ.setdefault(LOCAL_DEPLOY_DIR_ENV, str((pipeline_root.parent / "deploy").resolve()))
    os.environ.setdefault("DO_NOT_TRACK", "true")
    pipeline = distributed_training_pipeline if distributed else training_pipeline
    if distributed:
        arguments = {"launcher": "local", **arguments}
    check_arguments(pipeline, arguments)
    pipeline_root = pipeline_root.resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    with warnings.catch_warnings():
        # The images are for clusters; here the library is installed in this very environment.
        warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        pipeline(**arguments)
    runs = sorted(set(pipeline_root.glob(f"{pipeline.name}-*")) - before)  # kfp.local names runs after the pipeline
    if not runs:
        raise RuntimeError(f"kfp.local wrote no run directory under {pipeline_root}")
    return runs[-1]


def executor_outputs(run_dir: Path) -> dict[str, dict]:
    """Each task's executor output (artifact URIs and metadata, parameter outputs), by task name."""
    outputs = {}
    for path in sorted(run_dir.glob("*/executor_output.json")):
        outputs[path.parent.name] = json.loads(path.read_text())
    return outputs


def describe_run(run_dir: Path) -> str:
    """Where every artifact landed, and a table of the metrics."""
    lines = [f"Run directory: {run_dir}", "", "Artifacts:"]
    metric_rows = []
    for task, output in executor_outputs(run_dir).items():
        for name, entry in sorted(output.get("artifacts", {}).items()):
            for artifact in entry.get("artifacts", []):
                lines.append(f"  {task + '.' + name:<28} {artifact['uri']}")
                if name == "metrics":
                    for key, value in sorted(artifact.get("metadata", {}).items()):
                        if "_epoch_" not in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                            metric_rows.append((task, key, value))
        for name, value in sorted(output.get("parameterValues", {}).items()):
            lines.append(f"  {task + '.' + name:<28} = {value}")
    lines += ["", "Metrics:", f"  {'step':<18} {'metric':<18} {'value':>10}"]
    lines += [f"  {task:<18} {key:<18} {_number(value)}" for task, key, value in metric_rows]
    return "\n".join(lines)


def _number(value: float) -> str:
    """Four decimals, or two significant digits for the very small (the ONNX difference, ~1e-7)."""
    return f"{value:>10.2e}" if value and abs(value) < 1e-3 else f"{value:>10.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="demo repo, DVC remote, run outputs")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accuracy-threshold", type=float, default=0.95)
    parser.add_argument("--compile-dir", type=Path, default=Path("build/pipelines"))
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="run the distributed pipeline: DDP with torchrun on this machine (--processes of them)",
    )
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes with --distributed")
    parser.add_argument(
        "--image",
        action="store_true",
        help="also build the bento's container image with buildah into local storage (slow: it installs "
        "the serving dependencies); the base image is made from Debian packages on first use",
    )
    args = parser.parse_args(argv)

    began = time.monotonic()
    arguments = {
        "rev": "main",
        "epochs": args.epochs,
        "seed": args.seed,
        "accuracy_threshold": args.accuracy_threshold,
        # 8x8 digits are neither flip-invariant nor croppable: a random crop of a few pixels loses the digit.
        "augment": False,
        "push_image": False,
        "deploy_target": "local",  # served, verified and stopped; `make serve` serves it again
    }
    if args.distributed:
        arguments |= {"num_workers": args.processes, "launcher": "local"}
    # Bad values fail here, in a second, before the demo data is made or a base image built.
    pipeline = distributed_training_pipeline if args.distributed else training_pipeline
    check_arguments(pipeline, {"repo_url": "file:///demo", **arguments})
    if args.image:
        from components.containerize.debian_base import build_base_image

        arguments["image_repository"] = LOCAL_IMAGE_REPOSITORY
        arguments["serving_base_image"] = build_base_image()
    repo = prepare_digits_repo(args.workdir / "demo")
    print(f"Data: {repo.repo_url} @ {repo.commit[:12]}, {repo.data_path} tracked by DVC, remote {repo.remote_dir}")
    arguments |= {"repo_url": repo.repo_url, "data_path": repo.data_path}
    log_path = args.workdir / "pipeline-root" / LOG_FILE
    print(f"Running the {'distributed ' if args.distributed else ''}training pipeline with kfp.local:")
    try:
        with quiet_run(log_path):
            run_dir = run_local(arguments, args.workdir / "pipeline-root", distributed=args.distributed)
    except RuntimeError as error:
        print(f"{ANSI.sub('', str(error))}\nFull logs: {log_path}", file=sys.stderr)
        return 1
    log_path = log_path.replace(run_dir / LOG_FILE)
    print()
    print(describe_run(run_dir))
    print(f"\nFull logs of every step: {log_path}")
    print()
    for path in compile_all(args.compile_dir):
        print(f"Compiled pipeline (upload this in the Kubeflow UI): {path}")
    print(f"Done in {time.monotonic() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
