"""What the ``kfp-torch`` commands do against a KFP API: upload, run, wait, schedule.

Each function takes a :class:`~pipelines.kfp_client.KfpClient` and plain values, so it is usable
(and tested) without the command line. Inputs are checked before the first request that changes
anything on the server.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipelines import schedules
from pipelines.kfp_client import KfpClient, KfpError, KfpNotFound
from pipelines.run_parameters import CompiledPipeline, ParameterError, from_version_spec, load_compiled, parse_params

FINAL_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
DEFAULT_EXPERIMENT = "Default"


def version_name(pipeline_name: str, data: bytes) -> str:
    """``<pipeline-name>-<first 12 hex of sha256>``: the same file always gets the same version name."""
    return f"{pipeline_name}-{hashlib.sha256(data).hexdigest()[:12]}"


@dataclass
class UploadResult:
    pipeline: dict
    version: dict
    created_pipeline: bool
    uploaded: bool  # False: a version of this content existed already


def upload(
    client: KfpClient, path: str | Path, name: str | None = None, description: str | None = None, shared: bool = False
) -> UploadResult:
    """Upload a compiled pipeline as a pipeline, or as a new version of the pipeline of that name.

    Idempotent: the version name derives from the file's bytes, and an existing version of that name
    is reported instead of uploaded again.
    """
    path = Path(path)
    compiled = load_compiled(path)
    data = path.read_bytes()
    pipeline_name = name or compiled.name
    if not pipeline_name:
        raise ParameterError(f"{path} has no pipelineInfo.name; give the pipeline a name with --name")
    wanted = version_name(pipeline_name, data)
    pipeline = client.pipeline_by_name(pipeline_name)
    created = pipeline is None
    if created:
        pipeline = client.create_pipeline(pipeline_name, description or compiled.description, shared=shared)
    else:
        for version in client.list_versions(pipeline["pipeline_id"]):
            if version.get("name") == wanted:
                return UploadResult(pipeline, version, created_pipeline=False, uploaded=False)
    version = client.upload_version(
        pipeline["pipeline_id"], wanted, data, path.name, description or compiled.description
    )
    return UploadResult(pipeline, version, created_pipeline=created, uploaded=True)


@dataclass
class Target:
    """What a run or schedule starts: a compiled file, or a version of an uploaded pipeline."""

    compiled: CompiledPipeline
    label: str
    pipeline: dict | None = None
    version: dict | None = None


def target_from_file(path: str | Path) -> Target:
    compiled = load_compiled(path)
    return Target(compiled, f"{path} ({compiled.name})")


def target_from_server(client: KfpClient, pipeline_name: str, version: str | None = None) -> Target:
    """The named pipeline's version ``version`` (name or ID), or its latest version."""
    pipeline = client.find_pipeline(pipeline_name)
    pipeline_id = pipeline["pipeline_id"]
    if version:
        versions = client.list_versions(pipeline_id)
        matches = [
            v for v in versions if version in (v.get("name"), v.get("display_name"), v.get("pipeline_version_id"))
        ]
        if not matches:
            known = ", ".join(v.get("name", v.get("pipeline_version_id", "?")) for v in versions) or "none"
            raise KfpNotFound(f"pipeline {pipeline_name!r} has no version {version!r}; its versions: {known}", 404)
        chosen = matches[0]
    else:
        chosen = client.latest_version(pipeline_id)
        if chosen is None:
            raise KfpNotFound(f"pipeline {pipeline_name!r} has no versions; upload one with `kfp-torch upload`", 404)
    if not chosen.get("pipeline_spec"):
        chosen = client.get_version(pipeline_id, chosen["pipeline_version_id"])
    compiled = from_version_spec(chosen.get("pipeline_spec") or {})
    return Target(compiled, f"{pipeline_name} version {chosen.get('name')}", pipeline, chosen)


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


def _pipeline_fields(target: Target, always_latest: bool = False) -> dict:
    if target.pipeline is None:
        return {"pipeline_spec": target.compiled.run_body_spec()}
    reference = {"pipeline_id": target.pipeline["pipeline_id"]}
    if not always_latest:  # "If unset, the latest pipeline version is used."
        reference["pipeline_version_id"] = target.version["pipeline_version_id"]
    return {"pipeline_version_reference": reference}


def _runtime_config(parameters: dict, pipeline_root: str | None) -> dict:
    config: dict = {"parameters": parameters}
    if pipeline_root:
        config["pipeline_root"] = pipeline_root
    return config


def start_run(
    client: KfpClient,
    target: Target,
    parameters: dict,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> dict:
    experiment_id = client.experiment(experiment)["experiment_id"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H-%M-%S")
    body = {
        "display_name": run_name or f"{target.compiled.name or 'pipeline'} {stamp}",
        "experiment_id": experiment_id,
        **_pipeline_fields(target),
        "runtime_config": _runtime_config(parameters, pipeline_root),
    }
    if service_account:
        body["service_account"] = service_account
    return client.create_run(body)


def run_error(run: dict) -> str:
    """The run's error, from the run itself, its state history or its failed tasks."""
    messages = []
    if run.get("error", {}).get("message"):
        messages.append(run["error"]["message"])
    for status in reversed(run.get("state_history") or []):
        message = status.get("error", {}).get("message")
        if message and message not in messages:
            messages.append(message)
            break
    for task in (run.get("run_details") or {}).get("task_details") or []:
        if task.get("state") == "FAILED":
            detail = task.get("error", {}).get("message", "")
            messages.append(
                f"task {task.get('display_name', task.get('task_id', '?'))} failed" + (f": {detail}" if detail else "")
            )
    return "; ".join(messages) or "no error message was recorded"


def wait_for_run(
    client: KfpClient,
    run_id: str,
    poll_interval: float = 5.0,
    timeout: float | None = None,
    on_change: Callable[[str, dict], None] | None = None,
) -> dict:
    """Follow a run until it reaches a final state; ``on_change(state, run)`` sees every new state."""
    began = time.monotonic()
    last = None
    while True:
        run = client.get_run(run_id)
        state = run.get("state", "RUNTIME_STATE_UNSPECIFIED")
        if state != last:
            last = state
            if on_change:
                on_change(state, run)
        if state in FINAL_STATES:
            return run
        if timeout is not None and time.monotonic() - began > timeout:
            raise KfpError(f"run {run_id} is still {state} after {timeout:g} s; it goes on without this command")
        time.sleep(poll_interval)


def create_schedule(
    client: KfpClient,
    target: Target,
    parameters: dict,
    name: str,
    cron: str | None = None,
    interval: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    always_latest: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
    enabled: bool = True,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> dict:
    trigger = schedules.trigger(cron=cron, interval=interval)
    schedules.check_max_concurrency(max_concurrency)
    if always_latest and target.pipeline is None:
        raise ParameterError("always using the latest version needs an uploaded pipeline (--pipeline NAME), not a file")
    experiment_id = client.experiment(experiment)["experiment_id"]
    body = {
        "display_name": name,
        "experiment_id": experiment_id,
        **_pipeline_fields(target, always_latest=always_latest),
        "runtime_config": _runtime_config(parameters, pipeline_root),
        "trigger": trigger,
        "max_concurrency": str(max_concurrency),  # int64: a JSON string in this API
        "no_catchup": not catchup,
        "mode": "ENABLE" if enabled else "DISABLE",
    }
    if service_account:
        body["service_account"] = service_account
    return client.create_recurring_run(body)


def describe_schedule(recurring_run: dict) -> str:
    reference = recurring_run.get("pipeline_version_reference") or {}
    if reference and not reference.get("pipeline_version_id"):
        version = "latest version"
    elif reference:
        version = f"version {reference['pipeline_version_id']}"
    else:
        version = "pipeline spec"
    return (
        f"{recurring_run.get('recurring_run_id', '?')}  {recurring_run.get('status', 'STATUS_UNSPECIFIED'):<8}  "
        f"{schedules.describe_trigger(recurring_run.get('trigger') or {})}  "
        f"max {recurring_run.get('max_concurrency', '?')}  "
        f"{'no catch-up' if recurring_run.get('no_catchup') else 'catch-up'}  {version}  "
        f"{recurring_run.get('display_name', '')}"
    )
