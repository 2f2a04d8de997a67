"""Two registrations end to end, the same on every registry: what the tests of each backend run.

The models are the session's real digits models (``trained_models``: ``weak``, then ``strong``), published
under the artifact store ``root`` (a ``minio://`` bucket in the tests) as a cluster's train step leaves
them. Each run goes the pipeline's way, with the library's own steps (no KFP):

1. nothing is in production yet: ``fetch_baseline("production")`` finds no baseline and says why; the weak
   model is evaluated against nothing (evaluate's ``run_step``), registered with that evaluation, its
   image recorded, and marked as serving in production;
2. the baseline is now the first model, fetched from its registered URI (the very files the first run
   published); the strong model is evaluated against it, registered, and the run's report (report's
   ``write_report``, with the registration) compares it with the first model, still in production then;
   the strong model is then marked in turn, and becomes the production version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

from components.common.spec import SPEC_FILE, load_spec
from components.common.storage import publish
from components.evaluate.baseline import resolve_baseline
from components.evaluate.comparison_file import COMPARED, NONE, read_comparison
from components.evaluate.metrics_file import parse_metrics
from components.evaluate.step import StepOutputs, run_step
from components.find_baseline.baseline import fetch_baseline
from components.register.register import mark_production, record_image, register_model
from components.register.registry import Deployment, RegisteredVersion, open_registry
from components.register.settings import RegistrySettings
from components.report.content import artifact_fields
from components.report.markdown_report import md
from components.report.step import write_report

IMAGE_1 = "registry.example.com/ml/image-classifier@sha256:" + "1" * 64
IMAGE_2 = "registry.example.com/ml/image-classifier@sha256:" + "2" * 64
# The gate's least accuracy: none, so the weak first model (compared with nothing) passes; the second passes
# only by not being worse than the first.
THRESHOLD = 0.0


@dataclass
class Evaluated:
    """One run's evaluate outputs: the files, and the metrics record as KFP's ``Metrics`` metadata holds it."""

    outputs: StepOutputs
    evaluation: dict
    promote: bool


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, by its relative path, with its bytes."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes() for path in directory.rglob("*") if path.is_file()
    }


def publish_model(model_dir: Path, root: str, run: str) -> str:
    """Publish a trained Model directory under ``root`` as a run's train step does (spec.json last); its URI."""
    uri = f"{root}/{run}/train/model"
    publish(model_dir, uri, last=SPEC_FILE)
    return uri


def evaluate_run(model_dir: Path, model_uri: str, dataset_dir: Path, baseline_dir: Path, found: dict, out: Path):
    """evaluate's component, without KFP: the baseline artifact as find_baseline left it, then ``run_step``."""
    outputs = StepOutputs(out / "metrics", out / "predictions", out / "comparison", out / "worst_images")
    baseline = resolve_baseline(baseline_dir, found, uri=found.get("uri", ""))
    result = run_step(model_dir, dataset_dir, THRESHOLD, baseline, outputs, model_uri=model_uri)
    record = parse_metrics(Path(outputs.metrics).read_bytes(), str(outputs.metrics))
    return Evaluated(outputs, {"display_name": "metrics", **record}, result.comparison.promote)


def two_registrations(
    settings: RegistrySettings,
    work: Path,
    root: str,
    expected_first_reason: str,
    trained_models: Path,
    dataset_dir: Path,
) -> dict:
    """Run the scenario; returns what each step produced, for the backend's own assertions."""
    weak, strong = trained_models / "weak", trained_models / "strong"

    # Run 1: nothing in production, so nothing to compare with.
    first_baseline = fetch_baseline("production", work / "run-1" / "baseline", settings)
    assert first_baseline["baseline"] == "none", first_baseline
    assert first_baseline["reason"] == expected_first_reason
    assert list((work / "run-1" / "baseline").iterdir()) == []

    uri_1 = publish_model(weak, root, "run-1")
    run_1 = evaluate_run(weak, uri_1, dataset_dir, work / "run-1" / "baseline", first_baseline, work / "run-1")
    comparison_1 = read_comparison(run_1.outputs.comparison)
    assert comparison_1.baseline.status == NONE and comparison_1.baseline.reason == expected_first_reason
    assert run_1.promote and run_1.evaluation["promote"] is True
    assert "baseline_accuracy" not in run_1.evaluation
    version_1 = register_model(
        weak, uri_1, run_1.evaluation, work / "run-1" / "registered", "run-1", "training run 1", settings
    )
    assert version_1.model_uri == uri_1
    record_image(version_1.metadata(), IMAGE_1, settings)
    mark_production(
        version_1.metadata(),
        Deployment(name="image-classifier", url="http://image-classifier.serving:3000", image=IMAGE_1, namespace="ml"),
        settings,
    )
    assert open_registry(settings).production() == version_1

    # Run 2: the first model is the baseline, fetched from where the registry says it is.
    baseline_dir = work / "run-2" / "baseline"
    second_baseline = fetch_baseline("production", baseline_dir, settings)
    assert second_baseline["baseline"] == "production"
    assert second_baseline["uri"] == uri_1
    assert second_baseline["version"] == version_1.version
    assert second_baseline["version_id"] == version_1.version_id
    assert second_baseline["model_name"] == settings.model_name
    assert second_baseline["registry"] == settings.registry
    published = files_of(weak)
    assert {"spec.json", "weights.pt", "model.onnx"} <= set(published)
    assert files_of(baseline_dir) == published  # byte for byte what run 1 published, nothing else

    uri_2 = publish_model(strong, root, "run-2")
    run_2 = evaluate_run(strong, uri_2, dataset_dir, baseline_dir, second_baseline, work / "run-2")
    comparison_2 = read_comparison(run_2.outputs.comparison)
    assert comparison_2.baseline.status == COMPARED
    # The baseline scored on the same test files is the first run's model, scored as the first run scored it.
    assert comparison_2.shared.baseline.accuracy == comparison_1.candidate.accuracy
    assert run_2.evaluation["baseline_accuracy"] == run_1.evaluation["accuracy"]
    assert round(comparison_2.shared.candidate.accuracy, 6) == run_2.evaluation["accuracy"]
    assert run_2.evaluation["accuracy"] > run_1.evaluation["accuracy"]
    assert run_2.promote and run_2.evaluation["promote"] is True

    version_2 = register_model(
        strong, uri_2, run_2.evaluation, work / "run-2" / "registered", "run-2", "training run 2", settings
    )
    assert version_2.version != version_1.version
    assert open_registry(settings).production() == version_1  # registered is not serving

    html, markdown = write_report(
        run_2.outputs.comparison,
        run_2.outputs.worst_images,
        work / "run-2" / "report.html",
        work / "run-2" / "report.md",
        registration=artifact_fields(work / "run-2" / "registered", version_2.metadata()),
    )
    check_report_compares(html, markdown, settings, version_1, version_2.version, comparison_2)

    mark_production(version_2, Deployment(name="image-classifier", image=IMAGE_2), settings)
    assert open_registry(settings).production() == version_2
    return {
        "version_1": version_1,
        "version_2": version_2,
        "baseline": second_baseline,
        "evaluation_1": run_1.evaluation,
        "evaluation_2": run_2.evaluation,
        "markdown": markdown,
        "html": html,
    }


def check_report_compares(
    html: str, markdown: str, settings: RegistrySettings, first: RegisteredVersion, second: str, comparison
):
    """The second run's report names the first model, in production, as its baseline, and sets both models'
    accuracies on the same test files (as evaluate computed them: ``comparison``) side by side; it names the
    version this run registered. Names are looked for as each format writes text (escaped)."""
    production = (
        f"the production model: {settings.model_name} version {first.version} in the {settings.registry} registry"
    )
    registered = f"{settings.model_name} version {second} in the {settings.registry} registry"
    compared = f"Compared with {production} on the same {comparison.shared.samples} test images."
    candidate, baseline = comparison.shared.candidate.accuracy, comparison.shared.baseline.accuracy
    change = f"▲ {candidate - baseline:+.4f} better"
    headline = markdown.splitlines()[0]
    assert headline.startswith(f"# Promoted: accuracy {candidate:.4f}"), headline
    assert md(f"not worse than the baseline's {baseline:.4f} ({production})") in headline, headline
    assert md(compared) in markdown
    assert f"| accuracy | {candidate:.4f} | {baseline:.4f} | {change} |" in markdown
    assert md(registered) in markdown
    assert f"| baseline model | {md(f'{production} ({first.model_uri})')} |" in markdown
    assert escape(compared) in html
    assert (
        f'<td>accuracy</td><td class="number">{candidate:.4f}</td><td class="number">{baseline:.4f}</td>'
        f'<td class="better">{change}</td>'
    ) in html
    assert escape(registered) in html
    assert escape(f"{production} ({first.model_uri})") in html


def spec_properties(model_dir: Path) -> dict:
    """What a registration records from a model's spec.json, as the registries' tests expect it."""
    spec = load_spec(model_dir)
    return {
        "dataset_repository": str(spec.dataset.get("repo_url", "")),
        "dataset_commit": str(spec.dataset.get("commit", "")),
        "dataset_md5": json.dumps(spec.dataset.get("md5", {}), sort_keys=True),
        "parameters": dict(spec.training["parameters"]),
    }
