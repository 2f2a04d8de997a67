"""A cluster run's task outputs, resolved as KFP recorded them for that run: cached tasks included.

KFP names an output artifact's URI after the run that *computed* it. A task taken from KFP's cache
computes nothing: its outputs stay where an earlier run wrote them, so looking under this run's
directory of the artifact store finds nothing. What KFP does record for this run is in ML Metadata:
an execution per task in the run's context, CACHED for a cached task, linked by OUTPUT events to the
artifacts it stands for, wherever they are (``pipelines.metadata_store`` explains the records and how
they are reached). That is where the Kubeflow UI finds them, and where :func:`task_outputs` does:
the same calls, in the same order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.metadata_store import MESSAGES, MetadataStore, for_client, properties_of

MLMD_HOST_ENV = "KFP_MLMD_HOST"  # where ML Metadata answers, when not at the KFP host's origin
FINISHED = ("COMPLETE", "CACHED")
STATES = MESSAGES["Execution"].DESCRIPTOR.fields_by_name["last_known_state"].enum_type.values_by_number
OUTPUT = MESSAGES["Event"].DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name["OUTPUT"].number


class RunArtifactsError(LookupError):
    """The run, the task or its output is not recorded (yet); the message says what was found instead."""


@dataclass(frozen=True)
class RecordedArtifact:
    """One output artifact as ML Metadata holds it: where its file is, and its metadata."""

    id: int
    uri: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedTask:
    """A task of the run as KFP recorded it: its state (``COMPLETE``, ``CACHED``, ``FAILED``, ``RUNNING``,
    ``CANCELED``), the execution a cached one reused, and its output artifacts by output name."""

    task: str
    execution_id: int
    state: str
    outputs: dict[str, list[RecordedArtifact]]
    cached_from: int | None = None

    def output(self, name: str) -> RecordedArtifact:
        found = self.outputs.get(name) or []
        if len(found) != 1:
            known = ", ".join(sorted(self.outputs)) or "none"
            raise RunArtifactsError(
                f"task {self.task!r} (execution {self.execution_id}, {self.state}) has "
                f"{len(found) or 'no'} output {name!r} recorded; its outputs: {known}"
            )
        return found[0]


def metadata_store(source) -> MetadataStore:
    """A :class:`MetadataStore`, or the one a ``kfp.Client`` reaches (``KFP_MLMD_HOST`` overrides where)."""
    if isinstance(source, MetadataStore):
        return source
    return for_client(source, os.environ.get(MLMD_HOST_ENV) or None)


def recorded_tasks(source, run_id: str, wanted: Callable[[str], bool]) -> list[RecordedTask]:
    """Every task of run ``run_id`` whose name ``wanted`` accepts, with its outputs; ``source`` is a
    ``kfp.Client`` or a :class:`MetadataStore`. RunArtifactsError when ML Metadata knows no such run."""
    if not run_id or not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
        raise ValueError(f"run_id must be a run's id (letters, digits, '-', '_', '.'), got {run_id!r}")
    store = metadata_store(source)
    context = store.run_context(run_id)
    if context is None:
        raise RunArtifactsError(
            f"ML Metadata at {store.address} has no run {run_id}: the run has not started a task yet, or the id "
            "is not a Kubeflow Pipelines v2 run of this cluster"
        )
    executions = [e for e in store.executions(context.id) if wanted(_task_name(e))]
    if not executions:
        return []
    events = [e for e in store.events([e.id for e in executions]) if e.type == OUTPUT and e.path.steps]
    artifacts = {a.id: a for a in store.artifacts(sorted({e.artifact_id for e in events}))}
    tasks = []
    for execution in sorted(executions, key=lambda e: e.id):
        outputs: dict[str, list[RecordedArtifact]] = {}
        for event in events:
            if event.execution_id == execution.id and event.artifact_id in artifacts:
                artifact = artifacts[event.artifact_id]
                recorded = RecordedArtifact(artifact.id, artifact.uri, properties_of(artifact.custom_properties))
                outputs.setdefault(event.path.steps[0].key, []).append(recorded)
        custom = execution.custom_properties
        cached = custom["cached_execution_id"].string_value if "cached_execution_id" in custom else ""
        state = STATES[execution.last_known_state].name if execution.last_known_state in STATES else "UNKNOWN"
        cached_from = int(cached) if cached.isdigit() and state == "CACHED" else None
        tasks.append(RecordedTask(_task_name(execution), execution.id, state, outputs, cached_from))
    return tasks


def task_output(source, run_id: str, task: str, output: str) -> list[RecordedArtifact]:
    """The artifacts of ``task``'s output ``output`` in run ``run_id``: one per execution of the task (a task in
    a ``ParallelFor`` runs once per iteration). RunArtifactsError when the task has not finished in that run."""
    tasks = recorded_tasks(source, run_id, lambda name: name == task)
    return [recorded.output(output) for recorded in finished(tasks, run_id, f"task {task!r}")]


def finished(tasks: list[RecordedTask], run_id: str, what: str) -> list[RecordedTask]:
    """The tasks that finished (ran to completion, or were taken from the cache); RunArtifactsError naming the
    states when none did."""
    done = [task for task in tasks if task.state in FINISHED]
    if not done:
        seen = ", ".join(f"{task.task} {task.state}" for task in tasks)
        raise RunArtifactsError(
            f"run {run_id} has no finished {what}"
            + (f" (recorded: {seen})" if seen else ": the run has not reached it, failed or stopped before it")
        )
    return done


def _task_name(execution) -> str:
    properties = execution.custom_properties
    return properties["task_name"].string_value if "task_name" in properties else ""
