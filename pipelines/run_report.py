"""A cluster run's report (``components/report``), fetched from the artifact store where KFP recorded it.

Every way through the pipelines' promotion gate ends in a report task (``report``, ``report-2``, ...:
``pipelines.training_tasks.write_report``); exactly one of them runs. ML Metadata says which, and where its
``markdown`` and ``html`` outputs are (``pipelines.run_artifacts``: a report taken from KFP's cache is
the file of the run that computed it); the file is read through ``components.common.storage``.
"""

from __future__ import annotations

import re

from components.common.storage import StorageError, read_bytes
from pipelines.run_artifacts import RecordedArtifact, RunArtifactsError, finished, recorded_tasks
from pipelines.training_tasks import REPORT_TASK

FORMATS = ("markdown", "html")  # the report's outputs, by the name of their format
REPORT_TASKS = re.compile(rf"{re.escape(REPORT_TASK)}(-\d+)?")  # KFP's compiler numbers a name used again


def report_artifact(source, run_id: str, report_format: str = "markdown") -> RecordedArtifact:
    """The artifact of the run's report in ``report_format`` (``markdown`` or ``html``), as ML Metadata holds it.

    ``source`` is a ``kfp.Client`` or a ``MetadataStore``; RunArtifactsError when the run has no finished report.
    """
    if report_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {report_format!r}")
    tasks = recorded_tasks(source, run_id, REPORT_TASKS.fullmatch)
    done = finished(tasks, run_id, "report task (the pipeline's last step)")
    if len(done) > 1:  # one report per way through the gate: two finished reports are not this library's pipeline
        names = ", ".join(f"{task.task} (execution {task.execution_id})" for task in done)
        raise RunArtifactsError(f"run {run_id} has {len(done)} finished report tasks, {names}: which one is meant?")
    return done[0].output(report_format)


def read_report(source, run_id: str, report_format: str = "markdown") -> str:
    """The text of the run's report: Markdown (for a pull-request comment) or the self-contained HTML page."""
    artifact = report_artifact(source, run_id, report_format)
    try:
        data = read_bytes(artifact.uri)
    except StorageError as error:
        raise RunArtifactsError(f"cannot read the report's {report_format} at {artifact.uri}: {error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunArtifactsError(f"the report's {report_format} at {artifact.uri} is not UTF-8 text") from None
