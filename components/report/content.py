"""What the run report says, gathered from evaluate's files and the optional lineage artifacts. Torch-free.

``build_report`` turns evaluate's comparison (the decision, both models' scores on the same test
files, how each was made) and its worst-classified images, plus whatever the run also produced
(the bento, the registered version, the image, the deployment), into a ``Report``: the sections
``html_report`` and ``markdown_report`` render. An input that is absent becomes a line saying so.

The registration and deployment artifacts are read generically (``artifact_fields``): their
metadata, then the keys of a JSON object in the artifact's file. Keys read:

- registration: ``registry``, ``model_name``, ``version``, ``uri``;
- deployment: ``url``, ``image``, ``previous_image``, ``rolled_back``, ``model_tag``, and
  ``verification`` (an object: ``images``, ``agreed``, ``p50_ms``, ``p99_ms``, and any other
  number or text it holds, shown as it is);
- bento (``build_bento``'s artifact): ``model_tag``, ``bento_tag``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.onnx_model import PARITY_TOLERANCE
from components.evaluate.comparison_file import COMPARED, NONE, Comparison
from components.evaluate.worst_images import WorstImage
from components.report.drawing import confusion_png, curves_png

NOT_RECORDED = "not recorded"
REGISTRATION_KEYS = ("registry", "model_name", "version", "uri")
DEPLOYMENT_KEYS = ("url", "image", "previous_image", "rolled_back", "model_tag", "verification")
VERIFICATION_KEYS = ("images", "agreed", "p50_ms", "p99_ms")
BENTO_KEYS = ("model_tag", "bento_tag")


@dataclass
class ScoreRow:
    """A score of the candidate, and of the baseline on the same files when there is one."""

    name: str
    candidate: float
    baseline: float | None = None
    index: int | None = None  # a class's number in the confusion matrix

    @property
    def change(self) -> float | None:
        return None if self.baseline is None else self.candidate - self.baseline

    @property
    def changed(self) -> bool:
        """Different as shown: at four decimals."""
        return self.baseline is not None and round(self.candidate, 4) != round(self.baseline, 4)

    @property
    def direction(self) -> str:
        if self.baseline is None:
            return ""
        if not self.changed:
            return "unchanged"
        return "better" if self.candidate > self.baseline else "worse"

    def change_text(self) -> str:
        """ "▲ +0.0123 better", "▼ -0.0456 worse", "unchanged", or "" without a baseline."""
        if not self.changed:
            return self.direction
        return f"{'▲' if self.direction == 'better' else '▼'} {self.change:+.4f} {self.direction}"


@dataclass
class Row:
    """A named value of the candidate's, and the baseline's where there is one to set beside it."""

    name: str
    candidate: str
    baseline: str | None = None

    @property
    def changed(self) -> bool:
        return (
            self.baseline is not None
            and NOT_RECORDED not in (self.candidate, self.baseline)
            and (self.candidate != self.baseline)
        )


@dataclass
class Picture:
    title: str
    description: str  # what it shows, in words (the alt text)
    mime: str
    data: bytes


@dataclass
class Report:
    promote: bool
    reason: str
    compared_with: str  # what the candidate was compared with, or why with nothing
    classes_note: str  # where the classes differ: which were compared; else ""
    overall: list[ScoreRow]
    per_class: list[ScoreRow]
    parameters_note: str
    parameters: list[Row]
    dataset: list[Row]
    lineage: list[Row]
    pictures: list[Picture]
    worst: list[WorstImage]
    worst_note: str
    has_baseline: bool = field(default=False)

    @property
    def decision(self) -> str:
        return "Promoted" if self.promote else "Not promoted"


def artifact_fields(path: str | Path | None, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """An artifact's metadata, then the keys of the JSON object in its file (metadata wins); {} when absent."""
    fields: dict[str, Any] = {}
    if path is not None and Path(path).is_file():
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            content = None
        if isinstance(content, dict):
            fields.update(content)
    fields.update(metadata or {})
    return fields


def changed_first(rows: Sequence[ScoreRow]) -> list[ScoreRow]:
    """Changed scores first, the largest change first; then the rest in their order."""
    order = {id(row): i for i, row in enumerate(rows)}
    return sorted(rows, key=lambda r: (not r.changed, -abs(r.change or 0.0) if r.changed else order[id(r)]))


def build_report(
    comparison: Comparison,
    worst: Sequence[WorstImage] = (),
    bento: Mapping[str, Any] | None = None,
    registration: Mapping[str, Any] | None = None,
    deployment: Mapping[str, Any] | None = None,
    image: str = "",
    worst_count: int = 12,
) -> Report:
    """The report's content. ``bento``, ``registration``, ``deployment``: fields read with ``artifact_fields``
    (None: that input was not connected); ``image``: the built image's reference, by digest."""
    compared = comparison.baseline.status == COMPARED
    models = comparison.models
    return Report(
        promote=comparison.promote,
        reason=comparison.reason,
        compared_with=_compared_with(comparison),
        classes_note=_classes_note(comparison) if compared else "",
        overall=_overall(comparison),
        per_class=_per_class(comparison),
        parameters_note=_parameters_note(models),
        parameters=_parameters(models),
        dataset=_dataset(models),
        lineage=_lineage(comparison, bento, registration, deployment, image),
        pictures=_pictures(comparison),
        worst=list(worst)[:worst_count],
        worst_note=_worst_note(comparison, worst),
        has_baseline=compared,
    )


def _compared_with(comparison: Comparison) -> str:
    baseline = comparison.baseline
    if baseline.status == COMPARED:
        shared = comparison.shared
        return f"Compared with {baseline.label} on the same {shared.samples} test images."
    if baseline.status == NONE:
        return f"Compared with no baseline: {baseline.reason}."
    return f"Not compared: {baseline.reason}."


def _classes_note(comparison: Comparison) -> str:
    shared = comparison.shared
    if shared.same_classes:
        return ""
    parts = [
        f"The two models know different classes, so only the {len(shared.classes)} classes both know are compared, "
        f"on their {shared.samples} test images (the candidate's accuracy on all {comparison.candidate.samples} is "
        f"{comparison.candidate.accuracy:.4f})."
    ]
    if shared.candidate_only:
        parts.append(f"Only the candidate knows: {', '.join(shared.candidate_only)}.")
    if shared.baseline_only:
        parts.append(f"Only the baseline knows: {', '.join(shared.baseline_only)}.")
    if any(shared.candidate.outside) or any(shared.baseline.outside):
        parts.append("An answer naming a class the other model does not know counts as a miss.")
    return " ".join(parts)


def _overall(comparison: Comparison) -> list[ScoreRow]:
    if comparison.shared is None:
        c = comparison.candidate
        return [ScoreRow("accuracy", c.accuracy), ScoreRow("macro F1", c.macro_f1)]
    c, b = comparison.shared.candidate, comparison.shared.baseline
    return changed_first([ScoreRow("accuracy", c.accuracy, b.accuracy), ScoreRow("macro F1", c.macro_f1, b.macro_f1)])


def _per_class(comparison: Comparison) -> list[ScoreRow]:
    number = {name: i for i, name in enumerate(comparison.candidate.classes)}
    if comparison.shared is None:
        recall = comparison.candidate.per_class_recall
        return [ScoreRow(name, recall[name], None, number[name]) for name in comparison.candidate.classes]
    c, b = comparison.shared.candidate.per_class_recall, comparison.shared.baseline.per_class_recall
    return changed_first([ScoreRow(name, c[name], b[name], number[name]) for name in comparison.shared.classes])


def shown(value: Any) -> str:
    """A parameter's value as people write it."""
    if value is None or value == "":
        return "(none)" if value is None else "(empty)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _parameters_of(model: Mapping[str, Any] | None) -> dict[str, Any]:
    if not model:
        return {}
    training = model.get("training") or {}
    parameters = dict(training.get("parameters") or {})
    if "pretrained_weights" in training:
        parameters["pretrained_weights"] = training["pretrained_weights"]
    return parameters


def _parameters_note(models: Mapping[str, Any]) -> str:
    candidate, baseline = _parameters_of(models.get("candidate")), _parameters_of(models.get("baseline"))
    if not candidate:
        return "The candidate's spec records no training parameters (a custom training script's model)."
    if models.get("baseline") is None:
        return "No baseline to compare with: the candidate's training parameters."
    if not baseline:
        return "The baseline's spec records no training parameters: the candidate's are listed."
    differing = sum(1 for name in set(candidate) | set(baseline) if candidate.get(name) != baseline.get(name))
    if not differing:
        return "The training parameters are the baseline's."
    return f"{differing} training parameter{'s differ' if differing > 1 else ' differs'} from the baseline's."


def _parameters(models: Mapping[str, Any]) -> list[Row]:
    candidate, baseline = _parameters_of(models.get("candidate")), _parameters_of(models.get("baseline"))
    if not baseline:
        return [Row(name, shown(value)) for name, value in candidate.items()]
    names = list(candidate) + [name for name in baseline if name not in candidate]
    return [
        Row(name, shown(candidate.get(name)), shown(baseline.get(name)))
        for name in names
        if candidate.get(name) != baseline.get(name)
    ]


def size(total: Any) -> str:
    if not isinstance(total, int) or isinstance(total, bool):
        return NOT_RECORDED
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{total / scale:.1f} {unit} ({total:,} bytes)"
    return f"{total:,} bytes"


def _dataset_values(model: Mapping[str, Any] | None) -> dict[str, str]:
    data = (model or {}).get("dataset") or {}
    md5 = data.get("md5")
    if isinstance(md5, Mapping):
        md5 = ", ".join(f"{path}: {value}" for path, value in sorted(md5.items()))
    count = data.get("file_count")
    return {
        "repository": str(data["repo_url"]) if data.get("repo_url") else NOT_RECORDED,
        "commit": str(data["commit"]) if data.get("commit") else NOT_RECORDED,
        "md5": str(md5) if md5 else NOT_RECORDED,
        "files": f"{count:,}" if isinstance(count, int) and not isinstance(count, bool) else NOT_RECORDED,
        "size": size(data.get("total_bytes")),
    }


def _dataset(models: Mapping[str, Any]) -> list[Row]:
    candidate = _dataset_values(models.get("candidate"))
    if models.get("baseline") is None:
        return [Row(name, value) for name, value in candidate.items()]
    baseline = _dataset_values(models.get("baseline"))
    return [Row(name, candidate[name], baseline[name]) for name in candidate]


def _registered(registration: Mapping[str, Any] | None) -> str:
    if registration is None:
        return "not registered in this run (no registration given: not promoted, or no registry)"
    fields = {key: registration.get(key) for key in REGISTRATION_KEYS}
    if not any(fields.values()):
        return "the registration records none of " + ", ".join(REGISTRATION_KEYS)
    text = " ".join(str(v) for v in (fields["model_name"],) if v) or "the model"
    if fields["version"] not in (None, ""):
        text += f" version {fields['version']}"
    if fields["registry"]:
        text += f" in the {fields['registry']} registry"
    return text + (f" ({fields['uri']})" if fields["uri"] else "")


def _verification(verification: Any) -> str:
    if not isinstance(verification, Mapping):
        return "no verification recorded"
    v = verification
    parts = []
    if v.get("agreed") is not None and v.get("images") is not None:
        parts.append(f"{v['agreed']} of {v['images']} test images answered as evaluate predicted")
    latency = [f"{name} {v[key]} ms" for name, key in (("p50", "p50_ms"), ("p99", "p99_ms")) if v.get(key) is not None]
    if latency:
        parts.append("latency " + ", ".join(latency))
    others = [
        f"{key} {value}"
        for key, value in sorted(v.items())
        if key not in VERIFICATION_KEYS and isinstance(value, (str, int, float)) and not isinstance(value, bool)
    ]
    parts += others
    return "; ".join(parts) or "no verification recorded"


def _deployment_rows(deployment: Mapping[str, Any] | None) -> list[Row]:
    if deployment is None:
        return [Row("deployment", "not deployed in this run (no deployment given)")]
    rows = [Row("deployment", str(deployment.get("url") or "no URL recorded"))]
    if deployment.get("image"):
        rows.append(Row("deployed image", str(deployment["image"])))
    rolled_back = deployment.get("rolled_back")
    if rolled_back is not None:
        previous = f" to {deployment['previous_image']}" if deployment.get("previous_image") else ""
        rows.append(Row("rolled back", f"yes{previous}" if rolled_back else "no"))
    rows.append(Row("verification", _verification(deployment.get("verification"))))
    return rows


def _lineage(
    comparison: Comparison,
    bento: Mapping[str, Any] | None,
    registration: Mapping[str, Any] | None,
    deployment: Mapping[str, Any] | None,
    image: str,
) -> list[Row]:
    candidate = comparison.models["candidate"]
    versions = candidate.get("versions") or {}
    model_tag = (bento or {}).get("model_tag") or (deployment or {}).get("model_tag")
    onnx = comparison.candidate.onnx_max_difference
    rows = [
        Row("candidate model", str(candidate.get("uri") or NOT_RECORDED)),
        Row("architecture", f"{candidate.get('architecture')} over {len(comparison.candidate.classes)} classes"),
        Row("model tag", str(model_tag) if model_tag else "no bento built in this run (not promoted, or not given)"),
    ]
    if (bento or {}).get("bento_tag"):
        rows.append(Row("bento", str(bento["bento_tag"])))
    rows.append(Row("registered version", _registered(registration)))
    rows.append(
        Row(
            "ONNX parity",
            f"largest difference between torch's and the ONNX export's logits {onnx:.2g} over "
            f"{comparison.candidate.samples} test images (allowed: {PARITY_TOLERANCE:g} x max(1, |logit|))"
            if onnx is not None
            else "not checked",
        )
    )
    built = image or (deployment or {}).get("image")
    rows.append(Row("image", str(built) if built else "no image built in this run"))
    rows += _deployment_rows(deployment)
    if versions:
        rows.append(Row("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    baseline = comparison.models.get("baseline")
    if baseline is not None:
        rows.append(Row("baseline model", f"{comparison.baseline.label} ({baseline.get('uri')})"))
    return rows


def _pictures(comparison: Comparison) -> list[Picture]:
    pictures = []
    history = ((comparison.models["candidate"].get("training")) or {}).get("history") or []
    baseline = comparison.models.get("baseline") or {}
    baseline_history = (baseline.get("training") or {}).get("history") or None
    if history:
        over = " (solid), over the baseline's (dashed)" if baseline_history else ""
        pictures.append(
            Picture(
                "Training curves",
                f"Training and validation loss and accuracy per epoch of the candidate{over}.",
                "image/png",
                curves_png(history, baseline_history),
            )
        )
    scores = comparison.candidate
    pictures.append(
        Picture(
            "Confusion matrix",
            f"The candidate's confusion matrix on {scores.samples} test images: rows are the true class, columns "
            "the predicted one, numbered as in the per-class table.",
            "image/png",
            confusion_png(scores.confusion_matrix, scores.classes),
        )
    )
    return pictures


def _worst_note(comparison: Comparison, worst: Sequence[WorstImage]) -> str:
    misses = sum(
        count for i, row in enumerate(comparison.candidate.confusion_matrix) for j, count in enumerate(row) if i != j
    )
    if not misses:
        return "Every test image was classified right."
    if not worst:
        return f"{misses} test images were misclassified; no pictures of them were given."
    return (
        f"{misses} of {comparison.candidate.samples} test images were misclassified; these gave their true class the "
        "least probability."
    )
