"""The ``baseline_model`` evaluate compares with: a model, or a recorded absence of one.

The step that resolves the baseline (the registry's production version, a URI, or none) always
hands evaluate a ``Model`` artifact, so the pipeline needs no branch:

- **no baseline**: the directory is empty (on a cluster an empty artifact may not be downloaded at
  all, so a missing directory counts as empty) and the metadata says ``"baseline": "none"`` with a
  ``"reason"`` string, e.g. "no version of image-classifier is in production yet";
- **a baseline**: the directory holds a model of this library (``spec.json``, weights, usually
  ``model.onnx``) and the metadata says ``"baseline": "production"`` or ``"uri"``, with
  ``registry``, ``model_name``, ``version`` and ``uri`` where known. A Model with no ``baseline``
  key at all (a ``dsl.importer`` of a model directory) counts as given by URI.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.spec import SPEC_FILE

NONE, PRODUCTION, URI = "none", "production", "uri"
KINDS = (NONE, PRODUCTION, URI)
SOURCE_KEYS = ("baseline", "registry", "model_name", "version", "uri")  # what evaluate passes on


class BaselineError(ValueError):
    """A baseline artifact that breaks the contract above; the message says how."""


@dataclass
class Baseline:
    kind: str  # one of KINDS
    source: dict[str, Any] = field(default_factory=dict)  # SOURCE_KEYS found in the metadata
    reason: str = ""  # why there is none
    model_dir: Path | None = None

    @property
    def present(self) -> bool:
        return self.model_dir is not None

    def label(self) -> str:
        """How the report and the gate's reason name it: "the production model: image-classifier version 3
        in the mlflow registry", "the model at gs://models/v2", "no baseline"."""
        if not self.present:
            return "no baseline"
        s = self.source
        parts = [str(s["model_name"])] if s.get("model_name") else []
        if s.get("version") not in (None, ""):
            parts.append(f"version {s['version']}")
        if s.get("registry"):
            parts.append(f"in the {s['registry']} registry")
        detail = f": {' '.join(parts)}" if parts else ""
        return f"the production model{detail}" if self.kind == PRODUCTION else f"the model at {s['uri']}{detail}"


def no_baseline(reason: str) -> Baseline:
    return Baseline(NONE, {"baseline": NONE}, reason)


def resolve_baseline(path: str | Path | None, metadata: Mapping[str, Any] | None, uri: str = "") -> Baseline:
    """What a ``baseline_model`` artifact at ``path`` (with ``metadata``, from ``uri``) stands for.

    ``path`` None: no baseline input was connected at all.
    """
    if path is None:
        return no_baseline("no baseline_model was given")
    metadata = dict(metadata or {})
    kind = metadata.get("baseline", URI)
    if kind not in KINDS:
        raise BaselineError(f"baseline_model {uri or path}: metadata baseline={kind!r}; expected one of {KINDS}")
    directory = Path(path)
    empty = not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))
    if kind == NONE:
        reason = metadata.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BaselineError(
                f"baseline_model {uri or path} says baseline 'none' but gives no reason (a non-empty string)"
            )
        if not empty:
            raise BaselineError(
                f"baseline_model {uri or path} says baseline 'none' ({reason}) but its directory is not empty"
            )
        return no_baseline(reason.strip())
    if empty:
        raise BaselineError(
            f"baseline_model {uri or path} is empty but its metadata says baseline={kind!r}: expected a model of "
            f"this library ({SPEC_FILE}, weights, model.onnx), or baseline 'none' with a reason"
        )
    source = {key: metadata[key] for key in SOURCE_KEYS if metadata.get(key) not in (None, "")}
    source["baseline"] = kind
    source.setdefault("uri", uri or str(path))
    return Baseline(kind, source, model_dir=directory)
