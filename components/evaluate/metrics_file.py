"""The file in evaluate's ``metrics`` artifact: its scores and promotion decision as JSON.

``Metrics.log_metric`` records the scores in ML Metadata only, which the Pipelines REST API that
``kfp.Client`` speaks does not serve. KFP uploads every output artifact's file to the artifact
store, so evaluate also writes the same scores there, where anyone who can read the store finds
them (``pipelines.run_metrics``). The file is one JSON object: metric name -> number (``accuracy``,
``macro_f1``, ``recall_<class>``, ...), plus ``promote`` (true or false), ``reason`` (text) and,
where present, ``baseline`` (text: what the candidate was compared with, or why with nothing).

Plain JSON, no KFP and no torch: the notebook that reads it needs neither.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from components.evaluate.gate import PromotionDecision
from components.evaluate.scores import Evaluation, SharedComparison

DECISION_FIELDS = {"promote": bool, "reason": str}
TEXT_FIELDS = {**DECISION_FIELDS, "baseline": str}  # what ML Metadata keeps as metadata, not as a metric


class MetricsFileError(ValueError):
    """A metrics file that is not what evaluate writes; the message names where it came from."""


def check_record(record: Mapping, source: str) -> dict:
    """``record`` as a plain dict when it has the file's shape, else ``MetricsFileError`` naming ``source``."""
    if not isinstance(record, Mapping):
        raise MetricsFileError(f"{source}: a metrics file holds a JSON object, not {type(record).__name__}")
    for field, kind in DECISION_FIELDS.items():
        if field not in record:
            raise MetricsFileError(f"{source}: no {field!r} (evaluate writes {' and '.join(DECISION_FIELDS)})")
        if not isinstance(record[field], kind):
            raise MetricsFileError(f"{source}: {field!r} is {record[field]!r}, not a {kind.__name__}")
    if "baseline" in record and not isinstance(record["baseline"], str):
        raise MetricsFileError(f"{source}: 'baseline' is {record['baseline']!r}, not text")
    for name, value in record.items():
        if name in TEXT_FIELDS:
            continue
        if not isinstance(name, str) or not name:
            raise MetricsFileError(f"{source}: metric name {name!r} is not a name")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MetricsFileError(f"{source}: metric {name!r} is {value!r}, not a finite number")
    return dict(record)


def metrics_record(
    candidate: Evaluation,
    decision: PromotionDecision,
    comparison: SharedComparison | None = None,
    baseline: str = "",
) -> dict:
    """What evaluate reports: metric name -> number, then ``promote``, ``reason`` and ``baseline``.

    The same record goes to ML Metadata (``Metrics.log_metric``, and metadata for the text fields)
    and, as JSON, to the metrics artifact's file. ``onnx_max_difference`` is left out when the export
    was not checked. With a ``comparison``: the baseline's ``baseline_accuracy`` and
    ``baseline_macro_f1`` on the same files, ``compared_samples``, and ``compared_classes``; where the
    classes differ, ``shared_accuracy`` is the candidate's accuracy on those files. ``baseline``
    names what was compared with, or why nothing was.
    """
    record: dict = {
        "accuracy": round(candidate.accuracy, 6),
        "loss": round(candidate.loss, 6),
        "macro_f1": round(candidate.macro_f1, 6),
        "test_samples": candidate.samples,
    }
    if candidate.onnx_max_difference is not None:
        record["onnx_max_difference"] = float(f"{candidate.onnx_max_difference:.3g}")
    for name, recall in candidate.per_class_recall.items():
        record[f"recall_{name}"] = round(recall, 6)
    if comparison is not None:
        record["baseline_accuracy"] = round(comparison.baseline.accuracy, 6)
        record["baseline_macro_f1"] = round(comparison.baseline.macro_f1, 6)
        record["compared_samples"] = comparison.samples
        record["compared_classes"] = len(comparison.classes)
        if not comparison.same_classes:
            record["shared_accuracy"] = round(comparison.candidate.accuracy, 6)
    record["promote"] = decision.promote
    record["reason"] = decision.reason
    if baseline:
        record["baseline"] = baseline
    return record


def write_metrics(path: str | Path, record: Mapping) -> None:
    """Write ``record`` (metric name -> number, plus the text fields) as the metrics file at ``path``."""
    checked = check_record(record, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(checked, indent=2, allow_nan=False) + "\n")


def parse_metrics(data: bytes | str, source: str) -> dict:
    """The record in a metrics file's content; ``MetricsFileError`` naming ``source`` when it is not one."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MetricsFileError(f"{source} is not JSON: {error}") from None
    return check_record(record, source)
