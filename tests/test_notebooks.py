"""The notebooks run top to bottom and still show what is stored with them.

The quickstart runs for real; the cluster notebook twice, without a host (its cluster cells skipped, as
stored) and against a KFP API test server. The stored outputs (what the repository page shows) are compared
cell by cell with a fresh execution, volatile parts aside (``tests.support.notebooks``); ``make notebooks``
stores a fresh execution.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from tests.support.fake_kfp import FakeKfp
from tests.support.notebooks import (
    NOTEBOOKS,
    REGENERATE,
    WORKDIR_PREFIX,
    differences,
    execute,
    normalized_text,
    notebook_environment,
)


def fresh_workdir(parent: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))


def assert_matches_what_is_stored(name: str, fresh: nbformat.NotebookNode) -> None:
    stored = nbformat.read(NOTEBOOKS / name, as_version=4)
    found = differences(stored, fresh)
    assert not found, (
        f"notebooks/{name}'s stored outputs no longer match what it produces; if the change is meant, "
        f"run `{REGENERATE}` and commit the notebook.\n\n" + "\n\n".join(found)
    )


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    """Every output as printed: a stream's pieces joined as they were written (one print may come in several)."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                texts.append(output["text"])
            if "text/plain" in output.get("data", {}):
                texts.append(output["data"]["text/plain"] + "\n")
    return "".join(texts)


def outputs_of(notebook: nbformat.NotebookNode, mime: str) -> list:
    return [o for cell in notebook.cells for o in cell.get("outputs", []) if mime in o.get("data", {})]


class PageRequests(HTMLParser):
    """What an HTML page would run or fetch: scripts, frames, links, and every address that is not a
    ``data:`` URI or a fragment (in attributes and in CSS); the ``data:`` images it shows."""

    ADDRESSES = {"src", "href", "srcset", "poster", "data", "action", "formaction", "background", "xlink:href"}
    ACTIVE = {"script", "iframe", "frame", "object", "embed", "link", "base", "meta"}
    CSS_URL = re.compile(r"url\(\s*['\"]?(?!data:)|@import", re.IGNORECASE)

    def __init__(self, page: str):
        super().__init__()
        self.asks: list[str] = []
        self.images: list[str] = []
        self.in_style = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.in_style = tag == "style"
        attributes = dict(attrs)
        if tag in self.ACTIVE and not (tag == "meta" and set(attributes) == {"charset"}):
            self.asks.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.asks.append(f"{name} handler")
            elif name in self.ADDRESSES and value and not value.startswith(("data:", "#")):
                self.asks.append(value)
            elif name == "style" and self.CSS_URL.search(value or ""):
                self.asks.append(f"style {value}")
        if tag == "img":
            self.images.append(attributes.get("src") or "")

    def handle_endtag(self, tag):
        self.in_style = False

    def handle_data(self, data):
        if self.in_style and self.CSS_URL.search(data):
            self.asks.append(f"CSS {self.CSS_URL.search(data).group(0)}")


def assert_self_contained(page: str) -> None:
    found = PageRequests(page)
    assert found.asks == [], f"the report asks for more than itself: {found.asks}"
    assert found.images, "the report shows no pictures"
    for source in found.images:
        header, data = source.split(",", 1)
        assert header == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 0


def test_the_self_contained_check_catches_a_page_that_asks_for_more():
    page = (
        '<html><head><meta charset="utf-8"><link rel="stylesheet" href="http://127.0.0.1:8765/style.css">'
        "<style>h1 { background: url(https://example.com/bg.png) }</style></head>"
        '<body onload="x()"><img src="https://example.com/x.png"><script>fetch("/")</script></body></html>'
    )
    assert PageRequests(page).asks == [
        "<link>",
        "http://127.0.0.1:8765/style.css",
        "CSS url(",
        "onload handler",
        "https://example.com/x.png",
        "<script>",
    ]
    with pytest.raises(AssertionError, match="asks for more"):
        assert_self_contained(page)


def test_volatile_parts_are_ignored_and_everything_else_is_compared():
    stored = (
        "Run directory: /tmp/kfp-torch-notebook-ab1/work/pipeline-root/pytorch-training-2026-12-05-03-53-08-783185\n"
        "  train ...\n  train success in 12.3 s\n  find-baseline ...\n  find-baseline success in 0.4 s\n"
        "bento image-classifier:nyun4jhql6xssax4 at commit 0b448844d6ff; accuracy 0.9944"
    )
    fresh = (
        "Run directory: /tmp/pytest-of-ci/pytest-7/q0/kfp-torch-notebook-x_9/work/pipeline-root/"
        "pytorch-training-2026-12-06-11-02-59-000001\n"
        "  find-baseline ...\n  find-baseline success in 0.5 s\n  train ...\n  train success in 9.8 s\n"
        "bento image-classifier:aaaaaaaaaaaaaaa1 at commit 1234567890ab; accuracy 0.9944"
    )
    assert normalized_text(stored) == normalized_text(fresh)
    assert normalized_text(stored) != normalized_text(fresh.replace("0.9944", "0.9916"))
    assert normalized_text(stored) != normalized_text(fresh.replace("train success", "train failure"))


def png_base64(color: tuple[int, int, int], compress_level: int, text: str = "") -> str:
    image = Image.new("RGB", (4, 3), color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=compress_level, **({"pnginfo": _info(text)} if text else {}))
    return base64.b64encode(buffer.getvalue()).decode()


def _info(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", text)
    return info


def test_pictures_are_compared_by_what_they_show_not_by_their_bytes():
    red, red_again = png_base64((255, 0, 0), 9), png_base64((255, 0, 0), 1, text="matplotlib version X")
    assert red != red_again
    assert normalized_text(f"data:image/png;base64,{red}") == normalized_text(f"data:image/png;base64,{red_again}")
    redder = png_base64((254, 0, 0), 9)
    assert normalized_text(f"data:image/png;base64,{red}") != normalized_text(f"data:image/png;base64,{redder}")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[Path, nbformat.NotebookNode]:
    """The quickstart, executed once for the tests below: its working directory and the executed notebook."""
    workdir = fresh_workdir(tmp_path_factory.mktemp("quickstart"))
    return workdir / "work", execute("quickstart.ipynb", notebook_environment(workdir))


@pytest.mark.slow
def test_the_quickstart_shows_what_is_stored_with_it(quickstart):
    _, notebook = quickstart
    assert_matches_what_is_stored("quickstart.ipynb", notebook)


@pytest.mark.slow
def test_the_quickstart_runs_the_pipeline_draws_its_metrics_and_shows_its_report(quickstart):
    workdir, notebook = quickstart
    assert len(outputs_of(notebook, "image/png")) == 2  # learning curves, confusion matrix
    text = outputs_text(notebook)
    assert "promoted: True" in text
    [run_dir] = workdir.glob("pipeline-root/pytorch-training-*")
    assert f"Run directory: {run_dir}\n" in text  # the run's summary
    assert (run_dir / "build-bento/bento").is_dir()
    # The report, inline: the page the report step wrote, shown isolated from the notebook's own styles.
    [report] = outputs_of(notebook, "text/html")
    assert report["metadata"] == {"isolated": True}
    assert report["data"]["text/html"] == (run_dir / "report.html").read_text()
    assert '<h1 class="promoted">Promoted:' in report["data"]["text/html"]
    assert_self_contained(report["data"]["text/html"])


@pytest.mark.slow
def test_the_quickstart_fine_tunes_the_model_it_trained_on_a_few_images(quickstart):
    workdir, notebook = quickstart
    text = outputs_text(notebook)
    assert "{'train': 50, 'val': 50, 'test': 200}" in text
    scratch, fine_tuned = (float(value) for value in re.findall(r"^from .*: accuracy (\d\.\d+)", text, re.M))
    assert fine_tuned > scratch + 0.1
    assert "trained from scratch on 50 images (5 per class): with so few images, start from pretrained" in text
    [run_dir] = workdir.glob("pipeline-root/pytorch-training-*")
    spec = json.loads((workdir / "mirrored-models/from-the-first-Model/spec.json").read_text())
    assert spec["training"]["pretrained_weights"] == str(run_dir / "train/model/weights.pt")


CLUSTER_CELLS = 6  # the cells that talk to KFP: connect, run the function, read the run, scores, report, schedule


def test_the_cluster_notebook_skips_the_cluster_cells_without_a_host_as_stored(tmp_path):
    workdir = fresh_workdir(tmp_path)
    notebook = execute("cluster.ipynb", notebook_environment(workdir))
    assert outputs_text(notebook).count("skipped: set KFP_HOST") == CLUSTER_CELLS + 1  # and the YAML's run
    assert (workdir / "work/pipelines/training_pipeline.yaml").is_file()
    assert_matches_what_is_stored("cluster.ipynb", notebook)


@pytest.mark.slow
def test_cluster_notebook_runs_waits_reads_and_schedules_with_kfp_client(tmp_path):
    workdir = fresh_workdir(tmp_path)
    token = workdir / "token"
    token.write_text("notebook-token-sentinel")
    root = workdir / "pipeline-root"  # the artifact store, where the fake backend leaves evaluate's file
    evaluation = {"accuracy": 0.973214, "loss": 0.0912, "macro_f1": 0.971877, "test_samples": 359}
    evaluation |= {"recall_0": 1.0, "recall_1": 0.944444, "promote": True, "reason": "accuracy 0.9732 meets 0.9500"}
    report = "# Promoted: accuracy 0.9732 meets 0.9500\n\nCompared with nothing: no registry is set.\n"
    artifacts = {("evaluate", "metrics"): json.dumps(evaluation).encode(), ("report-2", "markdown"): report.encode()}
    with FakeKfp(token="notebook-token-sentinel", run_progress=(), pipeline_root=root, task_artifacts=artifacts) as kfp:
        env = notebook_environment(workdir, KFP_HOST=kfp.url, KF_PIPELINES_SA_TOKEN_PATH=str(token))
        notebook = execute("cluster.ipynb", env)
    assert kfp.violations == []
    text = outputs_text(notebook)
    assert "notebook-token-sentinel" not in text
    from_function, from_package = kfp.runs.values()
    assert from_function["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "pytorch-training"
    assert from_package["display_name"] == "training from the YAML"
    for run in (from_function, from_package):
        assert run["runtime_config"]["parameters"] == {
            "repo_url": "https://github.com/your-org/your-data.git",
            "epochs": 12,
            "accuracy_threshold": 0.95,
        }
        assert f"run {run['run_id']} ended SUCCEEDED" in text
    assert [e["display_name"] for e in kfp.experiments.values()] == ["notebook"]
    assert "train                SUCCEEDED" in text  # each step's state and time
    for run in (from_function, from_package):  # each run's evaluate output, where KFP's driver puts it
        assert len(list(root.glob(f"pytorch-training/{run['run_id']}/evaluate/*/metrics"))) == 1
    # the first run's scores, read back from the artifact store
    assert "accuracy 0.9732, macro F1 0.9719\n" in text
    assert "promote: True (accuracy 0.9732 meets 0.9500)\n" in text
    assert "  recall of 0          1.0000\n  recall of 1          0.9444\n" in text
    # the report of the run it waited for, shown as the UI shows it
    assert [output["data"]["text/markdown"] for output in outputs_of(notebook, "text/markdown")] == [report]
    [schedule] = kfp.recurring_runs.values()
    assert schedule["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert schedule["max_concurrency"] == "1" and schedule["no_catchup"] is True
    assert f"{schedule['recurring_run_id']} ENABLED 0 0 3 * * *" in text
