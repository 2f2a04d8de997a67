"""A cluster run's evaluation scores, read from the artifact store where KFP put them.

The Pipelines REST API that ``kfp.Client`` speaks serves no metrics: ``Metrics.log_metric`` records
them in ML Metadata. But KFP uploads every output artifact's file to the artifact store, and
evaluate writes its scores and promotion decision as JSON into its ``metrics`` artifact's file
(``components.evaluate.metrics_file``). KFP's driver names an output artifact
``<pipeline root>/<pipeline name>/<run id>/<task name>/<output name>`` (older KFP), or with a
random salt before the output name, ``.../<task name>/<salt>/<output name>``, so that each
iteration of a ``ParallelFor`` gets its own. The store is reached through
``components.common.storage``: ``minio://`` and ``s3://`` with the endpoint and credentials its
environment variables give (``KFP_TORCH_S3_ENDPOINT``, ``KFP_TORCH_S3_CREDENTIALS_DIR`` holding the
``mlpipeline-minio-artifact`` Secret's keys, or ``AWS_*``), ``gs://`` with Application Default
Credentials, or a local directory.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from components.common.storage import list_files, read_bytes
from components.evaluate.metrics_file import MetricsFileError, parse_metrics
from pipelines.training_pipeline import PIPELINE_NAME

# KFP's default pipeline root on a standard install (the kfp-launcher ConfigMap may name another).
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
EVALUATE_TASK = "evaluate"  # evaluate's task name in both compiled pipelines
METRICS_OUTPUT = "metrics"


class RunMetricsError(LookupError):
    """No metrics file for the run, more than one, or one that cannot be read as one."""


def task_prefix(run_id: str, pipeline_name: str, pipeline_root: str, task_name: str) -> str:
    """Where KFP puts the outputs of ``task_name`` in run ``run_id``: ``<root>/<pipeline>/<run>/<task>``."""
    for what, value in (("run_id", run_id), ("pipeline_name", pipeline_name), ("task_name", task_name)):
        if not value or "/" in value:
            raise ValueError(f"{what} must be a non-empty name without '/', got {value!r}")
    if not str(pipeline_root).strip("/"):
        raise ValueError(f"pipeline_root must name a directory or bucket, got {pipeline_root!r}")
    return f"{str(pipeline_root).rstrip('/')}/{pipeline_name}/{run_id}/{task_name}"


def find_output_files(
    run_id: str,
    pipeline_name: str = PIPELINE_NAME,
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    task_name: str = EVALUATE_TASK,
    output_name: str = METRICS_OUTPUT,
) -> list[str]:
    """The URIs of the task's output ``output_name`` in the run, in either of KFP's layouts, sorted."""
    prefix = task_prefix(run_id, pipeline_name, pipeline_root, task_name)
    found = []
    for relative in list_files(prefix):
        parts = PurePosixPath(relative).parts
        # <task>/<output> or <task>/<salt>/<output>; deeper is a file inside some artifact directory
        if parts[-1] == output_name and len(parts) <= 2:
            found.append(f"{prefix}/{relative}")
    return found


def read_all_run_metrics(
    run_id: str,
    pipeline_name: str = PIPELINE_NAME,
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    task_name: str = EVALUATE_TASK,
    output_name: str = METRICS_OUTPUT,
) -> dict[str, dict]:
    """Every metrics file the task wrote in the run (one per ``ParallelFor`` iteration), by URI.

    ``RunMetricsError`` when there is none, or one is not a metrics file.
    """
    uris = find_output_files(run_id, pipeline_name, pipeline_root, task_name, output_name)
    if not uris:
        prefix = task_prefix(run_id, pipeline_name, pipeline_root, task_name)
        raise RunMetricsError(
            f"no {output_name!r} output of task {task_name!r} under {prefix}/: the run may not have reached "
            f"{task_name} (still running, failed before it, or was stopped), {task_name} may have been taken from "
            "KFP's cache (its artifacts then stay under the run that computed them; run with enable_caching=False), "
            f"or the run's pipeline root or pipeline name is not {pipeline_root!r} / {pipeline_name!r}"
        )
    records = {}
    for uri in uris:
        try:
            records[uri] = parse_metrics(read_bytes(uri), uri)
        except MetricsFileError as error:
            message = f"{error} (expected what evaluate writes: metric name -> number, promote, reason)"
            raise RunMetricsError(message) from None
    return records


def read_run_metrics(
    run_id: str,
    pipeline_name: str = PIPELINE_NAME,
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    task_name: str = EVALUATE_TASK,
    output_name: str = METRICS_OUTPUT,
) -> dict:
    """The scores and promotion decision evaluate wrote in run ``run_id``.

    A dict of metric name -> number (``accuracy``, ``loss``, ``macro_f1``, ``test_samples``,
    ``onnx_max_difference``, ``recall_<class>``, ``baseline_accuracy`` with a baseline), plus
    ``promote`` (bool) and ``reason`` (str). ``pipeline_name`` is the name the pipeline was compiled
    with (the distributed one's is ``pipelines.distributed_training_pipeline.PIPELINE_NAME``);
    ``task_name`` is the task's name in the compiled pipeline (``evaluate-2`` for a second call).
    ``RunMetricsError`` when there is no metrics file, or one that is not one; when the task ran
    more than once (in a ``ParallelFor``) it names every file, and ``read_all_run_metrics`` reads them all.
    """
    records = read_all_run_metrics(run_id, pipeline_name, pipeline_root, task_name, output_name)
    if len(records) > 1:
        raise RunMetricsError(
            f"task {task_name!r} wrote {len(records)} {output_name!r} outputs in run {run_id} (it ran once per "
            f"ParallelFor iteration): {', '.join(records)}; read_all_run_metrics returns each by URI"
        )
    return next(iter(records.values()))
