"""The run report: its content, its Markdown as a CommonMark renderer shows it, its HTML as Chromium shows it
inside the Kubeflow UI's sandboxed iframe, its size, and the component under kfp.local."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from components.evaluate.baseline import resolve_baseline
from components.evaluate.comparison_file import read_comparison
from components.evaluate.predictions import Prediction
from components.evaluate.worst_images import WorstImage, read_worst_images
from components.report.content import ScoreRow, artifact_fields, build_report, changed_first
from components.report.html_report import render_html
from components.report.markdown_report import MARKDOWN_LIMIT, PICTURES_HEADING, render_markdown
from components.report.step import write_report
from tests.support import chromium
from tests.support.report_inputs import synthetic_evaluation

TEST_OUTPUTS = Path(__file__).resolve().parents[1] / "build" / "test-outputs"
needs_chromium = pytest.mark.skipif(
    not chromium.available(), reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
)


def report_of(tmp_path: Path, **options):
    comparison, worst, _ = synthetic_evaluation(tmp_path, **options)
    return build_report(read_comparison(comparison), read_worst_images(worst))


def commonmark(text: str) -> str:
    """The Markdown as a CommonMark renderer with GFM tables and raw HTML off shows it."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


class Tables(HTMLParser):
    """Each rendered table as rows of cell texts; the src of every image."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def parsed(html: str) -> Tables:
    tables = Tables()
    tables.feed(html)
    return tables


# --- content ---------------------------------------------------------------------------------------


def test_changed_scores_come_first_the_largest_change_first():
    rows = [
        ScoreRow("a", 0.90, 0.90),
        ScoreRow("b", 0.80, 0.85),
        ScoreRow("c", 0.95, 0.70),
        ScoreRow("d", 0.50, 0.50004),  # the same at four decimals: unchanged
        ScoreRow("e", 0.60, 0.61),
    ]
    ordered = changed_first(rows)
    assert [r.name for r in ordered] == ["c", "b", "e", "a", "d"]
    assert [r.change_text() for r in ordered] == [
        "▲ +0.2500 better",
        "▼ -0.0500 worse",
        "▼ -0.0100 worse",
        "unchanged",
        "unchanged",
    ]
    assert ScoreRow("x", 0.5).change_text() == ""  # no baseline, no change


def test_a_baseline_that_is_better_on_purpose_shows_as_worse_and_the_gate_refuses(tmp_path):
    report = report_of(tmp_path, candidate_accuracy=0.70, baseline_accuracy=0.90)
    assert not report.promote and "is worse than the baseline's" in report.reason
    assert "the production model: photos version 7 in the mlflow registry" in report.reason
    accuracy = next(row for row in report.overall if row.name == "accuracy")
    assert accuracy.direction == "worse" and accuracy.change < -0.1
    assert report.per_class[0].changed and abs(report.per_class[0].change) == max(
        abs(r.change) for r in report.per_class
    )
    markdown = render_markdown(report)
    assert markdown.splitlines()[0].startswith("# Not promoted: accuracy 0.")
    assert re.search(r"\| accuracy \| 0\.\d{4} \| 0\.\d{4} \| ▼ -0\.\d{4} worse \|", markdown)


def test_without_a_baseline_the_report_says_so_and_lists_the_candidates_parameters(tmp_path):
    report = report_of(tmp_path, baseline_accuracy=None, threshold=0.5)
    assert report.promote and report.decision == "Promoted"
    assert report.compared_with == "Compared with no baseline: nothing is in production yet."
    assert report.reason.endswith("; compared with no baseline: nothing is in production yet")
    assert all(row.baseline is None for row in report.overall + report.per_class + report.dataset)
    assert report.parameters_note == "No baseline to compare with: the candidate's training parameters."
    assert {row.name for row in report.parameters} >= {"epochs", "learning_rate", "pretrained_weights"}
    markdown = render_markdown(report)
    assert "| score | candidate |\n" in markdown and "baseline |" not in markdown.split("## What changed")[0]


def test_where_the_classes_differ_only_the_shared_ones_are_compared_and_the_report_says_so(tmp_path):
    others = [f"class_{i:03d}" for i in range(2, 10)] + ["zebra"]  # lacks class_000 and class_001
    report = report_of(tmp_path, classes=10, images=400, baseline_classes=others)
    assert report.classes_note.startswith("The two models know different classes, so only the 8 classes both know")
    assert "Only the candidate knows: class_000, class_001." in report.classes_note
    assert "Only the baseline knows: zebra." in report.classes_note
    assert {row.name for row in report.per_class} == set(others) - {"zebra"}
    assert "on the" in report.compared_with and "test images" in report.compared_with


def test_what_changed_in_the_inputs_names_the_parameters_and_data_that_differ(tmp_path):
    report = report_of(tmp_path, classes=5, images=200)
    assert [(r.name, r.candidate, r.baseline) for r in report.parameters] == [
        ("epochs", "12", "10"),
        ("learning_rate", "0.003", "0.01"),
    ]
    assert report.parameters_note == "2 training parameters differ from the baseline's."
    dataset = {row.name: row for row in report.dataset}
    assert dataset["commit"].changed and not dataset["repository"].changed
    assert dataset["size"].candidate == "14.4 MB (14,400,000 bytes)"
    assert dataset["files"].candidate == "300"


def test_absent_inputs_are_named_and_present_ones_read_generically(tmp_path):
    comparison, worst, _ = synthetic_evaluation(tmp_path, classes=5, images=200)
    bare = build_report(read_comparison(comparison), read_worst_images(worst))
    lineage = {row.name: row.candidate for row in bare.lineage}
    assert lineage["registered version"].startswith("not registered in this run")
    assert lineage["deployment"].startswith("not deployed in this run")
    assert lineage["image"] == "no image built in this run"
    assert lineage["model tag"].startswith("no bento built in this run")
    assert lineage["ONNX parity"].startswith("largest difference between torch's and the ONNX export's logits 3.1e-07")

    registration = {"registry": "kubeflow", "model_name": "photos", "version": "8", "uri": "s3://m/8", "x": [1]}
    deployment = {
        "url": "http://photos.team-a.svc.cluster.local",
        "image": "registry.example/photos@sha256:" + "b" * 64,
        "previous_image": "registry.example/photos@sha256:" + "a" * 64,
        "rolled_back": True,
        "verification": {"images": 64, "agreed": 61, "p50_ms": 12.5, "p99_ms": 40.0, "served_accuracy": 0.95},
    }
    full = build_report(
        read_comparison(comparison),
        read_worst_images(worst),
        bento={"model_tag": "image-classifier:v1abc", "bento_tag": "image-classifier:b1"},
        registration=registration,
        deployment=deployment,
        image="registry.example/photos@sha256:" + "b" * 64,
    )
    lineage = {row.name: row.candidate for row in full.lineage}
    assert lineage["registered version"] == "photos version 8 in the kubeflow registry (s3://m/8)"
    assert lineage["model tag"] == "image-classifier:v1abc"
    assert lineage["rolled back"] == "yes to registry.example/photos@sha256:" + "a" * 64
    assert lineage["verification"] == (
        "61 of 64 test images answered as evaluate predicted; latency p50 12.5 ms, p99 40.0 ms; served_accuracy 0.95"
    )
    assert lineage["deployment"] == "http://photos.team-a.svc.cluster.local"


def test_an_artifacts_fields_are_its_metadata_then_a_json_object_in_its_file(tmp_path):
    (tmp_path / "registration").write_text(json.dumps({"version": "3", "registry": "mlflow"}))
    assert artifact_fields(tmp_path / "registration", {"version": "4"}) == {"version": "4", "registry": "mlflow"}
    (tmp_path / "manifests").mkdir()  # a directory (applied manifests): metadata only
    assert artifact_fields(tmp_path / "manifests", {"url": "http://x"}) == {"url": "http://x"}
    (tmp_path / "text").write_text("not json")
    assert artifact_fields(tmp_path / "text", None) == {}
    assert artifact_fields(None, None) == {}


# --- the Markdown ------------------------------------------------------------------------------------


def test_the_markdown_tables_are_intact_in_a_commonmark_renderer_and_the_pictures_come_last(tmp_path):
    report = report_of(tmp_path, classes=100, images=5000)
    markdown = render_markdown(report)
    assert len(markdown) < MARKDOWN_LIMIT
    page = parsed(commonmark(markdown))
    overall, per_class, parameters, dataset, lineage, worst = page.tables
    for table in page.tables:
        assert len({len(row) for row in table}) == 1, table[:3]  # every row has the header's cells
    assert overall[0] == ["score", "candidate", "baseline", "change"] and len(overall) == 3
    assert per_class[0] == ["#", "class", "candidate", "baseline", "change"] and len(per_class) == 101
    assert len(worst) == 13 and worst[0][:3] == ["picture", "file", "true class"]
    assert len(page.images) == 2 + 12 and all(src.startswith("data:image/") for src in page.images)
    assert markdown.index(PICTURES_HEADING) > markdown.index("## Lineage")
    assert "<" not in markdown.split(PICTURES_HEADING)[0].replace("\\<", "")  # no HTML at all


def test_pictures_that_would_pass_the_viewers_limit_are_left_out_and_named(tmp_path):
    report = report_of(tmp_path, classes=100, images=5000)
    full = render_markdown(report)
    pictures_start = full.index(PICTURES_HEADING)
    limited = render_markdown(report, limit=pictures_start + 60_000)
    assert len(limited) <= pictures_start + 60_000
    assert limited[:pictures_start] == full[:pictures_start]  # the text and tables are never cut
    assert "Left out to stay within the Kubeflow UI's 400,000 characters of Markdown" in limited
    assert "(left out: see the HTML report)" in limited
    page = parsed(commonmark(limited))
    assert len({len(row) for row in page.tables[-1]}) == 1  # the worst-images table stays a table


HOSTILE = ["<img src=x onerror=alert(1)>", "a|b", "*bold* _x_ [l](http://e.com)", "&amp; `code`", "new\nline"]


def test_names_from_the_run_read_as_text_never_as_markup(tmp_path):
    report = report_of(tmp_path, classes=5, images=100)
    report.reason = "accuracy 0.1 <script>alert(1)</script> | x"
    for row, name in zip(report.per_class, HOSTILE, strict=True):
        row.name = name
    report.worst = [
        WorstImage(Prediction("<b>x</b>.png", "<i>t</i>", "p|q", 0.9, 0.1), None, problem="<script>alert(2)</script>"),
        WorstImage(Prediction("y.png", "a](javascript:x)", "b", 0.9, 0.1), b"\x89PNG", "image/png"),
    ]
    markdown = render_markdown(report)
    rendered = commonmark(markdown)
    for tag in ("<script", "<img src=x", "<b>", "<i>", "<em>", "<strong>", "<code>", "<a "):
        assert tag not in rendered, tag
    page = parsed(rendered)
    per_class = page.tables[1]
    assert [row[1] for row in per_class[1:]] == [name.replace("\n", " ") for name in HOSTILE]
    assert len({len(row) for row in per_class}) == 1
    html = render_html(report)
    for tag in ("<script", "<img src=x", "<b>x</b>", "<i>t</i>"):
        assert tag not in html, tag
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # A class name cannot end an image's alt text early: the whole picture stays one data: image.
    (alt,) = re.findall(r"!\[(true [^\]]*)\]\(data:image/png;base64,", markdown)
    assert alt == "true a  javascript:x , predicted b"


# --- the HTML -------------------------------------------------------------------------------------


def test_a_100_class_report_stays_within_its_size_bounds(tmp_path):
    comparison, worst, _ = synthetic_evaluation(tmp_path, classes=100, images=5000)
    html, markdown = write_report(comparison, worst, tmp_path / "html", tmp_path / "markdown")
    assert (tmp_path / "html").stat().st_size < 2_000_000
    assert len(markdown) < MARKDOWN_LIMIT
    assert (tmp_path / "html").read_text() == html and (tmp_path / "markdown").read_text() == markdown
    tags = set(re.findall(r"<([a-z]+)", html))
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form"}
    assert not re.search(r"""(src|href)=["'](?!data:image/)""", html)  # only data: pictures, nothing to fetch


def test_a_worst_count_outside_what_evaluate_keeps_is_refused_before_anything_is_written(tmp_path):
    comparison, worst, _ = synthetic_evaluation(tmp_path, classes=3, images=50)
    with pytest.raises(ValueError, match=r"worst_count must be an integer from 0 to 16 \(evaluate keeps 16\), got 17"):
        write_report(comparison, worst, tmp_path / "html", tmp_path / "markdown", worst_count=17)
    assert not (tmp_path / "html").exists() and not (tmp_path / "markdown").exists()


def keep(screenshot: Path, name: str) -> None:
    TEST_OUTPUTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, TEST_OUTPUTS / name)


@needs_chromium
def test_the_html_in_the_kubeflow_uis_sandboxed_iframe_shows_every_picture_and_asks_for_nothing(tmp_path):
    comparison, worst, _ = synthetic_evaluation(tmp_path, classes=100, images=5000)
    html, _ = write_report(comparison, worst, tmp_path / "html", tmp_path / "markdown")
    with chromium.Chromium() as browser:
        seen = browser.render_in_kfp_iframe(html, tmp_path, screenshot=tmp_path / "report-100-classes.png")
    keep(seen.screenshot, "report-100-classes.png")
    assert seen.requests == [(tmp_path / "kfp-html-viewer.html").as_uri()]  # the harness page, nothing else
    assert seen.errors == []
    assert len(seen.images) == 2 + 12
    assert all(image["width"] > 0 and image["height"] > 0 for image in seen.images), seen.images
    assert seen.text.startswith("Not promoted: accuracy 0.")


@needs_chromium
def test_the_browser_check_catches_a_page_that_asks_for_more(tmp_path):
    """The harness itself: a page with an outside picture and a stylesheet is seen asking, and refused."""
    page = (
        '<html><head><link rel="stylesheet" href="http://127.0.0.1:8765/style.css"></head><body>'
        '<img src="https://example.com/x.png"><img src="data:image/png;base64,AAAA"></body></html>'
    )
    with chromium.Chromium() as browser:
        seen = browser.render_in_kfp_iframe(page, tmp_path)
    assert sorted(seen.requests[1:]) == ["http://127.0.0.1:8765/style.css", "https://example.com/x.png"]
    assert any("example.com/x.png" in error for error in seen.errors)
    assert [image["width"] for image in seen.images] == [0, 0]  # neither decodes


# --- a real model ---------------------------------------------------------------------------------


@pytest.mark.slow
@needs_chromium
def test_a_real_candidate_against_a_better_production_model(digits_dir, trained_models, tmp_path):
    """The weak digits model against the strong one in production: refused, and the report shows why."""
    from components.evaluate.step import StepOutputs, run_step

    metadata = {"baseline": "production", "registry": "mlflow", "model_name": "digits", "version": "2"}
    baseline = resolve_baseline(trained_models / "strong", metadata, uri="s3://models/digits/2")
    out = StepOutputs(tmp_path / "metrics", tmp_path / "predictions", tmp_path / "comparison", tmp_path / "worst")
    result = run_step(trained_models / "weak", digits_dir, 0.0, baseline, out, model_uri="s3://runs/weak")
    assert not result.comparison.promote
    html, markdown = write_report(out.comparison, out.worst_images, tmp_path / "html", tmp_path / "markdown")
    first = markdown.splitlines()[0]
    assert first.startswith("# Not promoted: accuracy ") and "the production model: digits version 2" in first
    page = parsed(commonmark(markdown))
    accuracy = next(row for row in page.tables[0] if row[0] == "accuracy")
    assert accuracy[3].startswith("▼ -") and accuracy[3].endswith("worse")
    assert ["epochs", "1", "4", "changed"] in page.tables[2]  # weak: 1 epoch, strong: 4
    with chromium.Chromium() as browser:
        seen = browser.render_in_kfp_iframe(html, tmp_path, screenshot=tmp_path / "report-digits.png")
    keep(seen.screenshot, "report-digits.png")
    assert seen.errors == [] and len(seen.requests) == 1
    assert seen.images and all(image["width"] > 0 for image in seen.images)


# --- the component --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_component_writes_both_artifacts_under_kfp_local_with_and_without_the_optional_inputs(tmp_path):
    from kfp import local

    from tests.support.report_pipeline import report_alone, report_registered

    comparison, worst, _ = synthetic_evaluation(tmp_path / "evaluate", classes=5, images=100)
    (tmp_path / "registration").write_text("{}")
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    report_alone(comparison_uri=str(comparison), worst_images_uri=str(worst))
    image = "registry.example/photos@sha256:" + "c" * 64
    report_registered(
        comparison_uri=str(comparison),
        worst_images_uri=str(worst),
        registration_uri=str(tmp_path / "registration"),
        image=image,
    )
    (alone,) = root.glob("report-alone-*/report")
    (registered,) = root.glob("report-registered-*/report")
    outputs = json.loads((alone / "executor_output.json").read_text())["artifacts"]
    assert set(outputs) == {"html", "markdown"}
    assert (alone / "html").read_text().startswith("<!DOCTYPE html>")
    assert "not registered in this run" in (alone / "markdown").read_text()
    markdown = (registered / "markdown").read_text()
    assert "| registered version | photos version 8 in the mlflow registry (models:/photos/8) |" in markdown
    assert f"| image | {image} |" in markdown
