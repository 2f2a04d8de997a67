"""What the ``kfp-torch`` commands do with a ``kfp.Client``: upload, run, wait, list and stop runs, schedule.

Each function takes a ``kfp.Client`` and plain values, so it is usable (and tested) without the command
line, from a notebook too. Inputs are checked before the first request that changes anything on the
server. What ``kfp.Client`` raises passes through; the command line turns it into a message
(:meth:`pipelines.kfp_client.Connection.explain`). Namespaces are the client's (``kfp.Client(namespace=...)``,
or the one it found in a Kubeflow notebook).
"""

from __future__ import annotations

import difflib
import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import kfp
from kfp_server_api import (
    V2beta1Pipeline,
    V2beta1PipelineVersionReference,
    V2beta1RecurringRun,
    V2beta1Run,
    V2beta1RuntimeConfig,
)
from kfp_server_api.exceptions import ApiException

from pipelines import schedules
from pipelines.kfp_client import KfpError, KfpNotFound
from pipelines.run_parameters import CompiledPipeline, ParameterError, from_version_spec, load_compiled, parse_params

FINAL_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
DEFAULT_EXPERIMENT = "Default"
PACKAGE_SUFFIXES = (".yaml", ".yml")  # what kfp.Client reads as a compiled pipeline file (besides archives)
PAGE_SIZE = 100


def version_name(pipeline_name: str, data: bytes) -> str:
    """``<pipeline-name>-<first 12 hex of sha256>``: the same file always gets the same version name."""
    return f"{pipeline_name}-{hashlib.sha256(data).hexdigest()[:12]}"


def namespace_of(client: kfp.Client) -> str | None:
    return client.get_user_namespace() or None


# -- pipelines ------------------------------------------------------------------------------------
def pipeline_by_name(client: kfp.Client, name: str):
    """The pipeline named ``name`` in the client's namespace, else a shared one of that name, else None."""
    namespace = namespace_of(client)
    for scope in [namespace, None] if namespace else [None]:
        try:
            return client.pipelines.pipeline_service_get_pipeline_by_name(name=name, namespace=scope)
        except ApiException as error:
            if error.status != 404:
                raise
    return None


def _pages(list_page: Callable, key: str) -> list:
    """Every item of a paged list call (``list_page(page_token=...)``)."""
    items, token = [], ""
    while True:
        answer = list_page(page_token=token)
        items += getattr(answer, key) or []
        token = answer.next_page_token
        if not token:
            return items


def list_versions(client: kfp.Client, pipeline_id: str) -> list:
    return _pages(
        lambda page_token: client.list_pipeline_versions(pipeline_id, page_token=page_token, page_size=PAGE_SIZE),
        "pipeline_versions",
    )


def close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    if names:
        return "existing pipelines: " + ", ".join(sorted(names)[:20])
    return "there are no pipelines yet (upload one with `kfp-torch upload`)"


def find_pipeline(client: kfp.Client, name: str):
    pipeline = pipeline_by_name(client, name)
    if pipeline is None:
        listed = _pages(
            lambda page_token: client.list_pipelines(
                page_token=page_token, page_size=PAGE_SIZE, namespace=namespace_of(client)
            ),
            "pipelines",
        )
        raise KfpNotFound(
            f"no pipeline named {name!r}; {close_names(name, [p.name or p.display_name for p in listed])}"
        )
    return pipeline


@dataclass
class UploadResult:
    pipeline: V2beta1Pipeline
    version: object  # V2beta1PipelineVersion
    created_pipeline: bool
    uploaded: bool  # False: a version of this content existed already


def upload(
    client: kfp.Client,
    path: str | Path,
    name: str | None = None,
    description: str | None = None,
    shared: bool = False,
) -> UploadResult:
    """Upload a compiled pipeline as a pipeline, or as a new version of the pipeline of that name.

    Idempotent: the version name derives from the file's bytes, and an existing version of that name
    is reported instead of uploaded again. A pipeline created here is deleted again when its first
    version cannot be uploaded, so no empty pipeline is left behind.
    """
    path = Path(path)
    compiled = load_compiled(path)
    pipeline_name = name or compiled.name
    if not pipeline_name:
        raise ParameterError(f"{path} has no pipelineInfo.name; give the pipeline a name with --name")
    wanted = version_name(pipeline_name, path.read_bytes())
    description = description or compiled.description
    pipeline = pipeline_by_name(client, pipeline_name)
    if pipeline is not None:
        for version in list_versions(client, pipeline.pipeline_id):
            if version.name == wanted:
                return UploadResult(pipeline, version, created_pipeline=False, uploaded=False)
        version = client.upload_pipeline_version(
            str(path), wanted, pipeline_id=pipeline.pipeline_id, description=description
        )
        return UploadResult(pipeline, version, created_pipeline=False, uploaded=True)
    namespace = None if shared else namespace_of(client)
    pipeline = client.pipelines.pipeline_service_create_pipeline(
        pipeline=V2beta1Pipeline(
            name=pipeline_name, display_name=pipeline_name, description=description, namespace=namespace
        )
    )
    try:
        version = client.upload_pipeline_version(
            str(path), wanted, pipeline_id=pipeline.pipeline_id, description=description
        )
    except Exception as error:
        _remove_empty_pipeline(client, pipeline, error)
        raise
    return UploadResult(pipeline, version, created_pipeline=True, uploaded=True)


def _remove_empty_pipeline(client: kfp.Client, pipeline: V2beta1Pipeline, error: Exception) -> None:
    """Delete the pipeline created for an upload that failed, and say so on ``error``."""
    try:
        client.delete_pipeline(pipeline.pipeline_id)
    except Exception as cleanup:  # the upload's error is the one to report; this one rides along
        error.add_note(
            f"the pipeline {pipeline.name!r} ({pipeline.pipeline_id}), created for this upload, is left "
            f"without versions and could not be deleted ({type(cleanup).__name__}); delete it in the Kubeflow UI"
        )
    else:
        error.add_note(f"the pipeline {pipeline.name!r}, created for this upload, was deleted again")


# -- what a run or schedule starts ------------------------------------------------------------------
@dataclass
class Target:
    """What a run or schedule starts: a compiled file, or a version of an uploaded pipeline."""

    compiled: CompiledPipeline
    label: str
    pipeline: V2beta1Pipeline | None = None
    version: object | None = None  # V2beta1PipelineVersion


def target_from_file(path: str | Path) -> Target:
    compiled = load_compiled(path)
    return Target(compiled, f"{path} ({compiled.name})")


def target_from_server(client: kfp.Client, pipeline_name: str, version: str | None = None) -> Target:
    """The named pipeline's version ``version`` (name or ID), or its latest version."""
    pipeline = find_pipeline(client, pipeline_name)
    if version:
        versions = list_versions(client, pipeline.pipeline_id)
        matches = [v for v in versions if version in (v.name, v.display_name, v.pipeline_version_id)]
        if not matches:
            known = ", ".join(v.name or v.pipeline_version_id for v in versions) or "none"
            raise KfpNotFound(f"pipeline {pipeline_name!r} has no version {version!r}; its versions: {known}")
        chosen = matches[0]
    else:
        latest = client.list_pipeline_versions(pipeline.pipeline_id, page_size=1, sort_by="created_at desc")
        if not latest.pipeline_versions:
            raise KfpNotFound(f"pipeline {pipeline_name!r} has no versions; upload one with `kfp-torch upload`")
        chosen = latest.pipeline_versions[0]
    if not chosen.pipeline_spec:
        chosen = client.get_pipeline_version(pipeline.pipeline_id, chosen.pipeline_version_id)
    compiled = from_version_spec(chosen.pipeline_spec or {})
    return Target(compiled, f"{pipeline_name} version {chosen.name}", pipeline, chosen)


def typed_parameters(compiled: CompiledPipeline, assignments: list[str]) -> dict:
    """``--param`` values typed by the declared inputs, then this library's range checks for its own pipelines."""
    from pipelines.arguments import check_compiled_arguments

    label = compiled.name or "the pipeline"
    values = parse_params(assignments, compiled.inputs, label)
    try:
        check_compiled_arguments(compiled.name, values)
    except ValueError as error:
        raise ParameterError(str(error)) from None
    return values


def experiment_id(client: kfp.Client, name: str) -> str:
    """The ID of the experiment of that name in the client's namespace, created when there is none."""
    return client.create_experiment(name, namespace=namespace_of(client)).experiment_id


def find_experiment(client: kfp.Client, name: str):
    try:
        return client.get_experiment(experiment_name=name, namespace=namespace_of(client))
    except ValueError as error:  # kfp.Client's "No experiment is found with name ..."
        raise KfpNotFound(f"no experiment named {name!r}: {error}") from None


# -- runs -----------------------------------------------------------------------------------------
def start_run(
    client: kfp.Client,
    target: Target,
    parameters: dict,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    cache: bool = True,
) -> V2beta1Run:
    """Start a run of ``target``. ``cache=False`` runs every task afresh.

    KFP cannot turn caching off for an uploaded version at run time, so without the cache a version
    runs as its pipeline spec (the run then names no pipeline version).
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H-%M-%S")
    arguments = {
        "experiment_id": experiment_id(client, experiment),
        "job_name": run_name or f"{target.compiled.name or 'pipeline'} {stamp}",
        "params": parameters,
        "pipeline_root": pipeline_root,
        "service_account": service_account,
    }
    if cache and target.pipeline is not None:
        return client.run_pipeline(
            **arguments, pipeline_id=target.pipeline.pipeline_id, version_id=target.version.pipeline_version_id
        )
    path = target.compiled.path
    if cache and path is not None and path.suffix in PACKAGE_SUFFIXES:
        return client.run_pipeline(**arguments, pipeline_package_path=str(path))
    package = target.compiled if cache else target.compiled.without_cache()
    with tempfile.TemporaryDirectory(prefix="kfp-torch-") as folder:
        written = package.write(Path(folder) / "pipeline.yaml")
        return client.run_pipeline(**arguments, pipeline_package_path=str(written), enable_caching=cache or None)


def run_error(run: V2beta1Run) -> str:
    """The run's error, from the run itself, its state history or its failed tasks."""
    messages = []
    if run.error and run.error.message:
        messages.append(run.error.message)
    for status in reversed(run.state_history or []):
        message = status.error.message if status.error else None
        if message and message not in messages:
            messages.append(message)
            break
    for task in (run.run_details.task_details if run.run_details else None) or []:
        if task.state == "FAILED":
            detail = task.error.message if task.error and task.error.message else ""
            messages.append(
                f"task {task.display_name or task.task_id or '?'} failed" + (f": {detail}" if detail else "")
            )
    return "; ".join(messages) or "no error message was recorded"


def wait_for_run(
    client: kfp.Client,
    run_id: str,
    poll_interval: float = 5.0,
    timeout: float | None = None,
    on_change: Callable[[str, V2beta1Run], None] | None = None,
) -> V2beta1Run:
    """Follow a run until it reaches a final state; ``on_change(state, run)`` sees every new state."""
    began = time.monotonic()
    last = None
    while True:
        run = client.get_run(run_id)
        state = run.state or "RUNTIME_STATE_UNSPECIFIED"
        if state != last:
            last = state
            if on_change:
                on_change(state, run)
        if state in FINAL_STATES:
            return run
        if timeout is not None and time.monotonic() - began > timeout:
            raise KfpError(f"run {run_id} is still {state} after {timeout:g} s; it goes on without this command")
        time.sleep(poll_interval)


def list_runs(client: kfp.Client, experiment: str | None = None, limit: int = 20) -> list[V2beta1Run]:
    """The newest ``limit`` runs, of one experiment or of the namespace."""
    if limit < 1:
        raise ParameterError(f"--limit {limit} must be 1 or more")
    experiment_id_ = find_experiment(client, experiment).experiment_id if experiment else None
    answer = client.list_runs(
        page_size=limit, sort_by="created_at desc", experiment_id=experiment_id_, namespace=namespace_of(client)
    )
    return answer.runs or []


def terminate_run(client: kfp.Client, run_id: str) -> V2beta1Run:
    """Ask KFP to stop the run, unless it has ended already; the run as it is afterwards."""
    run = client.get_run(run_id)
    if run.state not in FINAL_STATES:
        client.terminate_run(run_id)
        run = client.get_run(run_id)
    return run


def _when(moment) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def describe_run(run: V2beta1Run) -> str:
    """One line: ID, state, creation time, name."""
    return f"{run.run_id}  {run.state or '?':<9}  {_when(run.created_at)}  {run.display_name or ''}"


def run_report(run: V2beta1Run) -> str:
    """Several lines: what ran, with which parameters, how it ended and how each task did."""
    reference = run.pipeline_version_reference
    source = (
        f"pipeline {reference.pipeline_id} version {reference.pipeline_version_id or '(latest)'}"
        if reference
        else "a pipeline spec sent with the run"
    )
    parameters = (run.runtime_config.parameters if run.runtime_config else None) or {}
    lines = [
        f"run {run.run_id}: {run.display_name or ''}",
        f"  state       {run.state}",
        f"  experiment  {run.experiment_id}",
        f"  pipeline    {source}",
        f"  created     {_when(run.created_at)}",
        f"  finished    {_when(run.finished_at)}",
    ]
    lines += [f"  parameter   {name} = {value!r}" for name, value in sorted(parameters.items())]
    if run.state in ("FAILED", "CANCELED"):
        lines.append(f"  error       {run_error(run)}")
    for task in (run.run_details.task_details if run.run_details else None) or []:
        lines.append(f"  task        {task.display_name or task.task_id}: {task.state}")
    return "\n".join(lines)


# -- recurring runs -------------------------------------------------------------------------------
@dataclass
class Schedule:
    """When a recurring run starts runs, and how many at once; checked when made.

    ``start_time`` and ``end_time`` are RFC 3339 times with a zone, or dates (see schedules.parse_time).
    """

    cron: str | None = None
    interval: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    max_concurrency: int = 1
    catchup: bool = False

    def __post_init__(self):
        if self.start_time is not None:
            self.start_time = schedules.parse_time(self.start_time, "--start-time")
        if self.end_time is not None:
            self.end_time = schedules.parse_time(self.end_time, "--end-time")
        self.trigger = schedules.trigger(self.cron, self.interval, self.start_time, self.end_time)
        schedules.check_window(self.start_time, self.end_time)
        schedules.check_max_concurrency(self.max_concurrency)


def create_schedule(
    client: kfp.Client,
    target: Target,
    parameters: dict,
    name: str,
    schedule: Schedule,
    always_latest: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
    enabled: bool = True,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> V2beta1RecurringRun:
    """Create a recurring run of ``target``.

    With ``always_latest`` each run takes the pipeline's latest version at that time (a version
    reference without a version, which kfp.Client.create_recurring_run cannot send), else the version
    resolved now, or the file's pipeline spec.
    """
    if always_latest and target.pipeline is None:
        raise ParameterError("always using the latest version needs an uploaded pipeline (--pipeline NAME), not a file")
    recurring_run = V2beta1RecurringRun(
        display_name=name,
        experiment_id=experiment_id(client, experiment),
        runtime_config=V2beta1RuntimeConfig(parameters=parameters, pipeline_root=pipeline_root),
        trigger=schedule.trigger,
        max_concurrency=schedule.max_concurrency,
        no_catchup=not schedule.catchup,
        mode="ENABLE" if enabled else "DISABLE",
        service_account=service_account,
    )
    if target.pipeline is None:
        recurring_run.pipeline_spec = target.compiled.run_body_spec()
    else:
        recurring_run.pipeline_version_reference = V2beta1PipelineVersionReference(
            pipeline_id=target.pipeline.pipeline_id,
            pipeline_version_id=None if always_latest else target.version.pipeline_version_id,
        )
    return client.recurring_runs.recurring_run_service_create_recurring_run(recurring_run=recurring_run)


def list_schedules(client: kfp.Client, experiment: str | None = None) -> list[V2beta1RecurringRun]:
    experiment_id_ = find_experiment(client, experiment).experiment_id if experiment else None
    return _pages(
        lambda page_token: client.list_recurring_runs(
            page_token=page_token, page_size=PAGE_SIZE, experiment_id=experiment_id_, namespace=namespace_of(client)
        ),
        "recurring_runs",
    )


def describe_schedule(recurring_run: V2beta1RecurringRun) -> str:
    reference = recurring_run.pipeline_version_reference
    if reference and not reference.pipeline_version_id:
        version = "latest version"
    elif reference:
        version = f"version {reference.pipeline_version_id}"
    else:
        version = "pipeline spec"
    return (
        f"{recurring_run.recurring_run_id or '?'}  {recurring_run.status or 'STATUS_UNSPECIFIED':<8}  "
        f"{schedules.describe_trigger(recurring_run.trigger)}  "
        f"max {recurring_run.max_concurrency or '?'}  "
        f"{'no catch-up' if recurring_run.no_catchup else 'catch-up'}  {version}  "
        f"{recurring_run.display_name or ''}"
    )
