"""Record that a model passed the promotion gate.

The record is the hand-off to packaging: which model, trained on which data
commit, with which test accuracy, promoted when and against which threshold.
Later steps (BentoML packaging) read the same model artifact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.model import load_spec

RECORD_FILE = "promotion.json"


def record_promotion(
    model_dir: str | Path,
    model_uri: str,
    evaluation: Mapping[str, Any],
    output_dir: str | Path,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Write ``output_dir/promotion.json`` and return its content."""
    spec = load_spec(model_dir)
    record = {
        "promoted_at": (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
        "model_uri": model_uri,
        "architecture": spec.architecture,
        "classes": spec.classes,
        "dataset": spec.dataset,
        "library_version": spec.versions.get("library"),
        "evaluation": dict(evaluation),
    }
    with atomic_directory(output_dir) as staging:
        write_json_atomic(staging / RECORD_FILE, record)
    return record
