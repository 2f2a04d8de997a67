"""Run the training pipeline end to end on this machine with ``kfp.local`` (``kfp-torch local``, ``make run``).

The data is one of:
- the demo's digits (the default): written as PNG files and versioned with DVC in a throwaway git
  repository with a local DVC remote;
- ``--data DIR``, your own dataset directory (class folders or ``labels.csv``): checked in seconds,
  then versioned the same way (a second run reuses the commit when the data did not change);
- ``--repo URL --rev REV --data-path PATH``: data already under DVC.

The pipeline's parameters are flags of the same names (``--image-size``, ``--pretrained-weights``,
...), typed and checked before anything runs. The run goes through kfp.local's SubprocessRunner
(DVC pull → train → evaluate → promotion gate → bento → report); the terminal gets a line per step,
the files that were written and the metrics, and the run report is copied into the run's directory
as ``report.html`` and ``report.md``. A failed run ends with the failing step's own error. The
compiled YAML a user would upload to Kubeflow is written too.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kfp.dsl.types.type_utils import get_parameter_type_name

from components.check_arguments.checks import TRAIN_STEP_PLACEMENT
from components.common.dataset import SplitRule, index_dataset
from components.common.storage import is_remote
from components.deploy.local_target import STATE_DIR_ENV as LOCAL_DEPLOY_DIR_ENV
from components.evaluate.gate import DECISION_OUTPUT
from pipelines.arguments import check_arguments
from pipelines.compile import compile_all
from pipelines.data_check import check_dataset_directory
from pipelines.demo_data import folder_repo, prepare_digits_repo, prepare_folder_repo
from pipelines.distributed_training_pipeline import build_distributed_training_pipeline
from pipelines.kubernetes_settings import ClusterSettings
from pipelines.run_parameters import TYPE_HINTS, ParameterError, convert
from pipelines.training_pipeline import build_training_pipeline, training_pipeline

DEFAULT_WORKDIR = Path(".local")
LOG_FILE = "run.log"
REPORT_FILES = {"html": "report.html", "markdown": "report.md"}  # the report step's outputs, as copied
LOCAL_IMAGE_REPOSITORY = "localhost/kfp-torch-lifecycle/image-classifier"  # buildah's local storage
SERVE_URL = "http://127.0.0.1:3000"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_STARTED = re.compile(r"Executing task '(?P<task>[^']+)'")
TASK_ENDED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
KFP_LOCAL_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")  # kfp.local's own log lines, not a step's
STEP_LINES_KEPT = 2000  # of the running step's output, for its error when it fails
CONTEXT_LINES_SHOWN = 10  # a failed step's last lines before its traceback

# Pipeline inputs without a flag: kfp.local ignores a step's placement, and --image sets the packaging.
PACKAGING_INPUTS = ("image_repository", "serving_base_image", "build_image", "push_image")
# A local run deploys with target local: served, verified and stopped; `make serve` serves it again.
DEPLOY_INPUTS = ("deploy_target", "deploy_namespace")
NOT_LOCAL = (*TRAIN_STEP_PLACEMENT, *PACKAGING_INPUTS, *DEPLOY_INPUTS)
# Where the data is; --data DIR and the demo set all but dvc_jobs themselves.
REPOSITORY_INPUTS = ("repo_url", "rev", "data_path", "dvc_remote", "dvc_remote_config")
DATA_INPUTS = (*REPOSITORY_INPUTS, "dvc_jobs")
FLAG_NAMES = {"repo_url": "--repo", "num_workers": "--processes"}
METAVARS = {"repo_url": "URL", "rev": "REV", "data_path": "PATH", "pretrained_weights": "PATH"}
TYPE_METAVARS = {"NUMBER_INTEGER": "N", "NUMBER_DOUBLE": "X", "BOOLEAN": "true|false", "STRUCT": "JSON", "LIST": "JSON"}
# The digits are 8x8: neither flip-invariant nor croppable (a random crop of a few pixels loses the digit).
DEMO_ARGUMENTS = {"augment": False}


class LocalInputError(ValueError):
    """A bad flag or data directory, found before anything runs; one line naming the flag."""


def flag(name: str) -> str:
    """The ``kfp-torch local`` flag that sets the pipeline input ``name``."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def local_inputs() -> dict:
    """The training pipeline's inputs that ``kfp-torch local`` takes as flags, by name (with type and default)."""
    return {name: spec for name, spec in training_pipeline.component_spec.inputs.items() if name not in NOT_LOCAL}


def with_flags(message: str) -> str:
    """``message`` (about pipeline inputs, by name) with each name replaced by the flag that sets it."""
    names = sorted({*local_inputs(), *FLAG_NAMES}, key=len, reverse=True)
    pattern = r"(?<![\w/.-])(" + "|".join(map(re.escape, names)) + r")(?![\w/-])"
    return re.sub(pattern, lambda match: flag(match.group(1)), message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block; the caller prints it and exits 2
        raise LocalInputError(message)


def _typed(name: str, parameter_type: str):
    def parse(raw: str):
        try:
            return convert(name, raw, parameter_type)
        except ParameterError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {TYPE_HINTS[parameter_type]}") from None

    return parse


def _help(spec, name: str) -> str:
    default = spec.default
    description = (spec.description or "").strip()
    if default is None:  # required by the pipeline
        return description.replace("%", "%%")
    shown = default if isinstance(default, str) and default else json.dumps(default)
    text = f"{description} (default: {shown})" if description else f"default: {shown}"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kfp-torch local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    data = parser.add_argument_group(
        "data (one of: the demo's digits, the default; --data DIR; --repo URL with --rev and --data-path)"
    )
    data.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="your dataset directory: class folders (<class>/<image>, optionally under train/, val/, test/) or "
        "labels.csv; versioned with DVC in a throwaway repository under --workdir",
    )
    parameters = parser.add_argument_group("pipeline parameters (typed and checked before the run)")
    for name, spec in local_inputs().items():
        parameter_type = get_parameter_type_name(spec.type)
        options = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "type": _typed(name, parameter_type),
            "metavar": METAVARS.get(name, TYPE_METAVARS.get(parameter_type, "TEXT")),
            "help": _help(spec, name),
        }
        if parameter_type == "BOOLEAN":
            options |= {"nargs": "?", "const": True}  # --augment alone means true
        (data if name in DATA_INPUTS else parameters).add_argument(flag(name), **options)
    run = parser.add_argument_group("the run")
    run.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="data repositories, DVC remote, run outputs")
    run.add_argument("--compile-dir", type=Path, default=Path("build/pipelines"))
    run.add_argument(
        "--distributed",
        action="store_true",
        help="run the distributed pipeline: DDP with torchrun on this machine (--processes of them)",
    )
    run.add_argument("--processes", type=int, default=2, help="torchrun processes with --distributed (default 2)")
    run.add_argument(
        "--image",
        action="store_true",
        help="also build the bento's container image with buildah into local storage (slow: it installs "
        "the serving dependencies); the base image is made from Debian packages on first use",
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The flags; ``--image_size`` is read as ``--image-size`` (the pipeline's own spelling works too)."""
    known = {flag(name) for name in local_inputs()}
    spelled = []
    for arg in argv:
        option, equals, value = arg.partition("=")
        dashed = option.replace("_", "-")
        spelled.append(dashed + equals + value if option.startswith("--") and dashed in known else arg)
    return build_parser().parse_args(spelled)


@functools.cache
def local_pipeline(distributed: bool):
    """The pipeline as ``kfp.local`` runs it: with no retries. On one machine no pod is lost, so a failed step
    failed for its own reason (a single class folder, a bad path), and a retry would only hold its message back
    by the backoff."""
    defaults = ClusterSettings()
    settings = dataclasses.replace(
        defaults, steps={step: dataclasses.replace(own, retries=0) for step, own in defaults.steps.items()}
    )
    build = build_distributed_training_pipeline if distributed else build_training_pipeline
    return build(settings)


@dataclass
class LocalRun:
    """What the flags ask for: the pipeline, its arguments (all but the data's location when that is
    prepared first) and where the data comes from."""

    distributed: bool
    arguments: dict
    data_dir: Path | None  # --data
    repo_given: bool  # --repo

    @property
    def pipeline(self):
        return local_pipeline(self.distributed)

    def split_rule(self) -> SplitRule:
        inputs = local_inputs()
        return SplitRule(
            test_fraction=self.arguments.get("test_fraction", inputs["test_fraction"].default),
            validation_fraction=self.arguments.get("validation_fraction", inputs["validation_fraction"].default),
        )


def plan(args: argparse.Namespace) -> LocalRun:
    """The run the flags describe, every value checked; ``LocalInputError`` naming the flag otherwise."""
    given = {name: getattr(args, name) for name in local_inputs() if hasattr(args, name)}
    repo_given = "repo_url" in given
    if args.data is not None and repo_given:
        raise LocalInputError("--data and --repo are two sources of data: give one")
    stray = [flag(name) for name in REPOSITORY_INPUTS if name in given and not repo_given]
    if stray:
        source = f"--data {args.data}" if args.data is not None else "the demo's digits"
        raise LocalInputError(
            f"{', '.join(stray)} {'goes' if len(stray) == 1 else 'go'} with --repo URL (data already under DVC); "
            f"with {source} the data's location is set for you"
        )
    arguments = ({} if repo_given or args.data is not None else dict(DEMO_ARGUMENTS)) | given
    arguments["push_image"] = False  # a local run has no registry to push to
    arguments["deploy_target"] = "local"
    if repo_given and not is_remote(arguments["repo_url"]) and Path(arguments["repo_url"]).expanduser().is_dir():
        arguments["repo_url"] = str(Path(arguments["repo_url"]).expanduser().resolve())
    baseline = arguments.get("baseline", "")
    if baseline and baseline not in ("production", "none") and not is_remote(baseline):
        if not Path(baseline).expanduser().is_dir():
            raise LocalInputError(
                f"--baseline {baseline}: give none, production, or a model directory of this library (an earlier "
                "run's train/model); it does not exist"
            )
        arguments["baseline"] = str(Path(baseline).expanduser().resolve())
    if arguments.get("pretrained_weights") and not is_remote(arguments["pretrained_weights"]):
        weights = Path(arguments["pretrained_weights"]).expanduser()
        if not weights.exists():
            raise LocalInputError(
                f"--pretrained-weights {weights} does not exist; give a weights file (.pth/.pt, e.g. torchvision's "
                "resnet18-f37072fd.pth) or a Model directory of this library (spec.json + weights.pt)"
            )
        arguments["pretrained_weights"] = str(weights.resolve())
    if args.distributed:
        arguments |= {"num_workers": args.processes, "launcher": "local"}
    run = LocalRun(args.distributed, arguments, args.data, repo_given)
    try:
        check_arguments(run.pipeline, {"repo_url": "file:///prepared-before-the-run", **arguments})
    except ValueError as error:
        raise LocalInputError(with_flags(str(error))) from None
    return run


class StepProgress(io.TextIOBase):
    """Stands in for stdout during a ``kfp.local`` run: every line goes to the run's log file, the
    terminal gets a line as each step starts and ends, and a failed step's last lines before its
    traceback. ``failure`` keeps the last failed step (or attempt) and its own error message."""

    def __init__(self, log, terminal):
        self.log, self.terminal = log, terminal
        self.pending = ""
        self.started: dict[str, float] = {}
        self.lines: collections.deque[str] = collections.deque(maxlen=STEP_LINES_KEPT)
        self.failure: StepFailure | None = None

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
            self.lines.clear()
            print(f"  {started['task']} ...", file=self.terminal, flush=True)
        elif ended := TASK_ENDED.search(line):
            seconds = time.monotonic() - self.started.get(ended["task"], time.monotonic())
            print(f"  {ended['task']} {ended['status'].lower()} in {seconds:.1f} s", file=self.terminal, flush=True)
            if ended["status"] != "SUCCESS":  # a retried step fails again: its last attempt's error counts
                self.failure = StepFailure.from_output(ended["task"], list(self.lines))
                shown = self.failure.context[-CONTEXT_LINES_SHOWN:]
                print("".join(f"    | {kept}\n" for kept in shown), end="", file=self.terminal, flush=True)
        elif not KFP_LOCAL_LINE.match(line):
            self.lines.append(line.rstrip())


TRACEBACK = "Traceback (most recent call last):"
EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?:: (?P<message>.*))?$")
KFP_EXECUTOR_PREAMBLE = re.compile(
    r"\[KFP Executor [^\]]*\]: (Looking for component|Loading KFP component|Got executor_input:)"
)
OWN_PACKAGES = ("components.", "pipelines.", "serving.")  # exceptions whose messages stand alone


@dataclass
class StepFailure:
    """A failed step: its name, its output before the traceback, and its exception's message."""

    task: str
    context: list[str]
    message: str

    @classmethod
    def from_output(cls, task: str, lines: list[str]) -> StepFailure:
        starts = [i for i, line in enumerate(lines) if line.strip() == TRACEBACK]
        if not starts:
            shown = [line.strip() for line in lines if line.strip()]
            return cls(task, shown, shown[-1] if shown else "it wrote no error message")
        context = [line.strip() for line in own_output(lines[: starts[0]]) if line.strip()]
        return cls(task, context, exception_message(lines[starts[-1] :]))


def own_output(lines: list[str]) -> list[str]:
    """A step's output without the KFP executor's preamble (which component it loads, its executor input as JSON)."""
    kept: list[str] = []
    closing = None  # the line that closes the executor input's JSON object
    json_next = False
    for line in lines:
        if closing is not None:
            closing = None if line.rstrip() == closing else closing
            continue
        if json_next and line.strip() == "{":
            closing, json_next = line.rstrip()[:-1] + "}", False
            continue
        json_next = False
        if preamble := KFP_EXECUTOR_PREAMBLE.search(line):
            json_next = preamble[1] == "Got executor_input:"
            continue
        kept.append(line)
    return kept


def exception_message(traceback: list[str]) -> str:
    """The exception a Python traceback ends with, on one line: ``Type: message`` (no type for this library's
    own errors, whose messages stand alone), a message of several lines joined."""
    base = len(traceback[0]) - len(traceback[0].lstrip())
    body = [line[base:] for line in traceback[1:]]
    ending = next((i for i, line in enumerate(body) if line.strip() and not line[:1].isspace()), None)
    if ending is None:
        return "the traceback ends without an exception"
    message_lines = [line.strip() for line in body[ending:] if line.strip()]
    first = EXCEPTION_LINE.match(message_lines[0])
    if first and first["message"] is not None:
        kind = first["type"]
        own = kind.startswith(OWN_PACKAGES)
        message_lines[0] = first["message"] if own else f"{kind.rsplit('.', 1)[-1]}: {first['message']}"
    text = message_lines[0]
    for line in message_lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


@contextlib.contextmanager
def quiet_run(log_path: Path) -> Iterator[StepProgress]:
    """kfp.local's logs (every task's inputs, outputs and output) into ``log_path``; progress on the terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    with open(log_path, "w") as log:
        progress = StepProgress(log, terminal)
        sys.stdout = progress
        try:
            yield progress
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
    pipeline = local_pipeline(distributed)
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
    """Each task's executor output (artifact URIs and metadata, parameter outputs), by task name, in the order
    the tasks ended."""
    paths = sorted(run_dir.glob("*/executor_output.json"), key=lambda path: (path.stat().st_mtime_ns, path))
    return {path.parent.name: json.loads(path.read_text()) for path in paths}


def describe_run(run_dir: Path) -> str:
    """The files the run wrote, its output values, and its metrics (scores, the promotion decision and its reason).

    An artifact without a file (metrics that live in ML Metadata only) is not listed as a file: its
    values are in the metrics.
    """
    files, values, metrics = [], [], []
    for task, output in executor_outputs(run_dir).items():
        for name, entry in output.get("artifacts", {}).items():
            for artifact in entry.get("artifacts", []):
                uri = artifact.get("uri", "")
                if uri and not is_remote(uri) and Path(uri).exists():
                    files.append((f"{task}.{name}", uri))
                if name == "metrics":  # per-epoch values are in the log and the Kubeflow UI's plots
                    recorded = artifact.get("metadata", {}).items()
                    metrics += [(task, key, value) for key, value in recorded if "_epoch_" not in key]
        values += [(output_label(task, name), value) for name, value in output.get("parameterValues", {}).items()]
    lines = [f"Run directory: {run_dir}", "", "Files:"]
    width = max((len(name) for name, _ in files + values), default=0) + 2
    lines += [f"  {name:<{width}}{uri}" for name, uri in files]
    if values:
        lines += ["", "Outputs:"] + [f"  {name:<{width}}{_value(value)}" for name, value in values]
    lines += ["", "Metrics:", f"  {'step':<18} {'metric':<20} {'value':>10}"]
    lines += [f"  {task:<18} {key:<20} {_value(value, table=True)}" for task, key, value in metrics]
    return "\n".join(lines)


def output_label(task: str, name: str) -> str:
    """How the summary names a task's parameter output: ``task.name``, and evaluate's bare ``Output`` as what it is,
    the promotion decision."""
    if task == "evaluate" and name == DECISION_OUTPUT:
        return f"{task}.{name} (promotion decision)"
    return f"{task}.{name}"


def copy_report(run_dir: Path) -> list[Path]:
    """The run report, from the report step that ran, copied into the run's directory (``report.html``,
    ``report.md``), so a browser opens it by name; the copies' paths ([] when no report was written)."""
    from pipelines.run_report import REPORT_TASKS

    copied = []
    for task, output in executor_outputs(run_dir).items():
        if not REPORT_TASKS.fullmatch(task):
            continue
        for name, file_name in REPORT_FILES.items():
            for artifact in output.get("artifacts", {}).get(name, {}).get("artifacts", []):
                source = Path(artifact.get("uri", ""))
                if source.is_file():
                    target = run_dir / file_name
                    target.write_bytes(source.read_bytes())
                    copied.append(target)
    return copied


def _value(value, table: bool = False) -> str:
    """Numbers to four decimals (two significant digits for the very small: the ONNX difference, ~1e-7),
    whole numbers as they are, true/false, text as it is."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:.4f}" if not value or abs(value) >= 1e-3 else f"{value:.2e}"
    elif isinstance(value, str):
        return value
    else:
        return json.dumps(value, sort_keys=True)  # a dict passed through KFP comes in any key order
    return f"{text:>10}" if table else text


def next_step(run_dir: Path, example: Path | None = None) -> str:
    """What to do with the result: serve the bento the run deployed (and send it ``example``), or why there is
    none."""
    outputs = executor_outputs(run_dir)
    bento = outputs.get("build-bento", {}).get("artifacts", {}).get("bento", {}).get("artifacts", [{}])[0]
    tag = bento.get("metadata", {}).get("bento_tag")
    if tag:
        deployed = Path(os.environ.get(LOCAL_DEPLOY_DIR_ENV, DEFAULT_WORKDIR / "deploy")).resolve()
        if deployed == (Path.cwd() / DEFAULT_WORKDIR / "deploy").resolve():
            command = "make serve"
        else:  # what make serve runs, for another state directory
            command = f"python -m components.deploy.local_target serve --state-dir {shlex.quote(str(deployed))}"
        if example is not None and example.is_relative_to(Path.cwd()):
            example = example.relative_to(Path.cwd())
        image = shlex.quote(str(example)) if example else "IMAGE"
        return (
            f"Next: serve the bento {tag} on {SERVE_URL} with\n  {command}\n"
            f"and send it an image:\n  curl -X POST {SERVE_URL}/predict -F files=@{image}"
        )
    evaluation = outputs.get("evaluate", {}).get("artifacts", {}).get("metrics", {}).get("artifacts", [{}])[0]
    reason = evaluation.get("metadata", {}).get("reason")
    return f"No bento was built: the promotion gate held the model back ({reason})." if reason else ""


def example_image(directory: Path, rule: SplitRule) -> Path | None:
    """An image of the test split under ``directory`` (one the model never saw), to send to the service."""
    try:
        index = index_dataset(directory, rule)
    except ValueError:
        return None
    test = index.samples("test")
    return index.root / test[0].path if test else None


def prepare_data(run: LocalRun, workdir: Path) -> tuple[dict, Path | None]:
    """Version the data with DVC when it is not already (--data, the demo): the pipeline arguments that locate
    it, and the directory holding it here (None for --repo)."""
    if run.repo_given:
        arguments = run.arguments
        print(f"Data: {arguments['repo_url']} @ {arguments.get('rev', 'main')}, {arguments.get('data_path')}")
        return {}, None
    if run.data_dir is not None:
        source = run.data_dir.expanduser().resolve()
        repo = prepare_folder_repo(source, workdir / "data")
        print(f"Data: {source} versioned in {repo.describe()}")
    else:
        repo = prepare_digits_repo(workdir / "demo")
        source = Path(repo.repo_url) / repo.data_path
        print(f"Data: the digits, in {repo.describe()}")
    return {"repo_url": repo.repo_url, "rev": "main", "data_path": repo.data_path}, source


def main(argv: list[str] | None = None) -> int:
    """``kfp-torch local``. Bad input raises ``LocalInputError`` (the CLI prints it on one line, exit 2);
    a failed run returns 1 after the failing step's own error, on the last line."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    began = time.monotonic()
    # Every value is checked here, in seconds, before the data is copied or a base image built.
    run = plan(args)
    if run.data_dir is not None:
        try:
            check_dataset_directory(run.data_dir, run.split_rule())
            folder_repo(run.data_dir, args.workdir / "data")
        except ValueError as error:
            raise LocalInputError(f"--data: {error}") from None
    arguments = dict(run.arguments)
    if args.image:
        from components.containerize.debian_base import build_base_image

        arguments["image_repository"] = LOCAL_IMAGE_REPOSITORY
        arguments["serving_base_image"] = build_base_image()
    try:
        located, data_here = prepare_data(run, args.workdir)
    except RuntimeError as error:  # git or dvc failed: their own output says why
        print(f"kfp-torch: error: could not version the data: {error}", file=sys.stderr)
        return 1
    arguments |= located
    log_path = args.workdir / "pipeline-root" / LOG_FILE
    print(f"Running the {'distributed ' if run.distributed else ''}training pipeline with kfp.local:")
    progress = None
    try:
        with quiet_run(log_path) as progress:
            run_dir = run_local(arguments, args.workdir / "pipeline-root", distributed=run.distributed)
    except RuntimeError as error:
        sys.stdout.flush()
        failure = progress.failure if progress is not None else None
        message = f"step {failure.task} failed: {failure.message}" if failure else ANSI.sub("", str(error))
        print(f"Full logs of every step: {log_path}\nkfp-torch: error: {message}", file=sys.stderr)
        return 1
    log_path = log_path.replace(run_dir / LOG_FILE)
    print()
    print(describe_run(run_dir))
    print(f"\nFull logs of every step: {log_path}")
    for path in copy_report(run_dir):
        print(f"Report: {path}" + (" (open it in a browser)" if path.suffix == ".html" else ""))
    print()
    for path in compile_all(args.compile_dir):
        print(f"Compiled pipeline (upload this in the Kubeflow UI): {path}")
    print(f"Done in {time.monotonic() - began:.0f} s.")
    example = example_image(data_here, run.split_rule()) if data_here else None
    if suggestion := next_step(run_dir, example):
        print(suggestion)
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["local", *sys.argv[1:]]))
