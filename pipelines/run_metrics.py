"""A cluster run's evaluation scores, read where KFP recorded evaluate's ``metrics`` output for that run.

The Pipelines REST API that ``kfp.Client`` speaks serves no metrics: ``Metrics.log_metric`` records
them in ML Metadata. evaluate also writes its scores and promotion decision as JSON into its ``metrics``
artifact's file (``components.evaluate.metrics_file``), which KFP uploads to the artifact store.
:func:`read_run_metrics` asks ML Metadata, as the Kubeflow UI does, which artifact is evaluate's
``metrics`` in this run (``pipelines.run_artifacts``): for an evaluate taken from KFP's cache, that is the
file of the run that computed it. Then it reads that file through ``components.common.storage``:
``minio://`` and ``s3://`` with the endpoint and credentials its environment variables give
(``KFP_TORCH_S3_ENDPOINT``, ``KFP_TORCH_S3_CREDENTIALS_DIR`` holding the ``mlpipeline-minio-artifact``
Secret's keys, or ``AWS_*``), ``gs://`` with Application Default Credentials, or a local directory.
"""

from __future__ import annotations

from components.common.storage import StorageError, read_bytes
from components.evaluate.metrics_file import MetricsFileError, parse_metrics
from pipelines.run_artifacts import RunArtifactsError, task_output

EVALUATE_TASK = "evaluate"  # evaluate's task name in both compiled pipelines
METRICS_OUTPUT = "metrics"


class RunMetricsError(LookupError):
    """No metrics file for the run, more than one, or one that cannot be read as one."""


def read_all_run_metrics(
    source, run_id: str, task_name: str = EVALUATE_TASK, output_name: str = METRICS_OUTPUT
) -> dict[str, dict]:
    """Every metrics file the task's executions in run ``run_id`` have (one per ``ParallelFor`` iteration), by URI.

    ``source`` is a ``kfp.Client`` (ML Metadata is asked at its host, see ``pipelines.metadata_store``) or a
    ``MetadataStore``. ``RunMetricsError`` when the task has not finished in the run, or a file is not a
    metrics file.
    """
    try:
        artifacts = task_output(source, run_id, task_name, output_name)
    except RunArtifactsError as error:
        raise RunMetricsError(str(error)) from None
    records = {}
    for artifact in artifacts:
        try:
            records[artifact.uri] = parse_metrics(read_bytes(artifact.uri), artifact.uri)
        except StorageError as error:
            raise RunMetricsError(
                f"cannot read {task_name}'s {output_name!r} (artifact {artifact.id}): {error}"
            ) from None
        except MetricsFileError as error:
            message = f"{error} (expected what evaluate writes: metric name -> number, promote, reason)"
            raise RunMetricsError(message) from None
    return records


def read_run_metrics(source, run_id: str, task_name: str = EVALUATE_TASK, output_name: str = METRICS_OUTPUT) -> dict:
    """The scores and promotion decision evaluate recorded in run ``run_id``, computed there or taken from the cache.

    A dict of metric name -> number (``accuracy``, ``loss``, ``macro_f1``, ``test_samples``,
    ``onnx_max_difference``, ``recall_<class>``, ``baseline_accuracy`` with a baseline), plus
    ``promote`` (bool), ``reason`` and ``baseline`` (str). ``source`` is the ``kfp.Client`` that started
    or found the run; ``task_name`` is the task's name in the compiled pipeline (``evaluate-2`` for a
    second call). ``RunMetricsError`` when there is no metrics file, or one that is not one; when the
    task ran more than once (in a ``ParallelFor``) it names every file, and ``read_all_run_metrics``
    reads them all.
    """
    records = read_all_run_metrics(source, run_id, task_name, output_name)
    if len(records) > 1:
        raise RunMetricsError(
            f"task {task_name!r} has {len(records)} {output_name!r} outputs in run {run_id} (it ran once per "
            f"ParallelFor iteration): {', '.join(records)}; read_all_run_metrics returns each by URI"
        )
    return next(iter(records.values()))
