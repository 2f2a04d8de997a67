"""The file in evaluate's ``metrics`` artifact: its scores and promotion decision as JSON.

``Metrics.log_metric`` records the scores in ML Metadata only, which the Pipelines REST API that
``kfp.Client`` speaks does not serve. KFP uploads every output artifact's file to the artifact
store, so evaluate also writes the same scores there, where anyone who can read the store finds
them (``pipelines.run_metrics``). The file is one JSON object: metric name -> number (``accuracy``,
``macro_f1``, ``recall_<class>``, ...), plus ``promote`` (true or false) and ``reason`` (text).

Plain JSON, no KFP and no torch: the notebook that reads it needs neither.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

DECISION_FIELDS = {"promote": bool, "reason": str}


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
    for name, value in record.items():
        if name in DECISION_FIELDS:
            continue
        if not isinstance(name, str) or not name:
            raise MetricsFileError(f"{source}: metric name {name!r} is not a name")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MetricsFileError(f"{source}: metric {name!r} is {value!r}, not a finite number")
    return dict(record)


def write_metrics(path: str | Path, record: Mapping) -> None:
    """Write ``record`` (metric name -> number, plus promote and reason) as the metrics file at ``path``."""
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
