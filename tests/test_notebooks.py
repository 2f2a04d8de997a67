"""The notebooks run top to bottom: the quickstart locally, the cluster one against a KFP API test server."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.fake_kfp import FakeKfp

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


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


def markdown_outputs(notebook: nbformat.NotebookNode) -> list:
    return [o for cell in notebook.cells for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]


def has_image(cell) -> bool:
    return any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


@pytest.mark.slow
def test_quickstart_runs_the_pipeline_and_draws_its_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_TORCH_LIFECYCLE_WORKDIR", str(tmp_path))
    monkeypatch.setenv("QUICKSTART_EPOCHS", "4")
    notebook = execute("quickstart.ipynb")
    assert sum(has_image(cell) for cell in notebook.cells) == 2  # learning curves, confusion matrix
    assert "promoted: True" in outputs_text(notebook)
    [report] = [output["data"]["text/markdown"] for output in markdown_outputs(notebook)]
    assert report.startswith("# Promoted:") and "## Pictures" in report and "](data:image/" in report
    assert list(tmp_path.glob("pipeline-root/pytorch-training-*/report.html"))
    assert list(tmp_path.glob("pipeline-root/pytorch-training-*/build-bento/bento"))


CLUSTER_CELLS = 6  # the cells that talk to KFP: connect, run the function, read the run, scores, report, schedule


@pytest.fixture
def notebook_env(tmp_path, monkeypatch):
    """No Kubeflow around the kernel, and no ~/.config/kfp of this machine's user."""
    for name in ("KFP_HOST", "KF_PIPELINES_SA_TOKEN_PATH", "KUBERNETES_SERVICE_HOST", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFP_TORCH_LIFECYCLE_WORKDIR", str(tmp_path / "work"))
    return tmp_path


def test_cluster_notebook_skips_the_cluster_cells_without_a_host(notebook_env):
    text = outputs_text(execute("cluster.ipynb"))
    assert text.count("skipped: set KFP_HOST") == CLUSTER_CELLS + 1  # and the run from the compiled YAML
    assert (notebook_env / "work/pipelines/training_pipeline.yaml").is_file()


@pytest.mark.slow
def test_cluster_notebook_runs_waits_reads_and_schedules_with_kfp_client(notebook_env, monkeypatch):
    token = notebook_env / "token"
    token.write_text("notebook-token-sentinel")
    root = notebook_env / "pipeline-root"  # the artifact store, where the fake backend leaves evaluate's file
    evaluation = {"accuracy": 0.973214, "loss": 0.0912, "macro_f1": 0.971877, "test_samples": 359}
    evaluation |= {"recall_0": 1.0, "recall_1": 0.944444, "promote": True, "reason": "accuracy 0.9732 meets 0.9500"}
    report = "# Promoted: accuracy 0.9732 meets 0.9500\n\nCompared with nothing: no registry is set.\n"
    artifacts = {("evaluate", "metrics"): json.dumps(evaluation).encode(), ("report-2", "markdown"): report.encode()}
    with FakeKfp(token="notebook-token-sentinel", run_progress=(), pipeline_root=root, task_artifacts=artifacts) as kfp:
        monkeypatch.setenv("KFP_HOST", kfp.url)
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
        notebook = execute("cluster.ipynb")
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
    assert [output["data"]["text/markdown"] for output in markdown_outputs(notebook)] == [report]
    [schedule] = kfp.recurring_runs.values()
    assert schedule["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert schedule["max_concurrency"] == "1" and schedule["no_catchup"] is True
    assert f"{schedule['recurring_run_id']} ENABLED 0 0 3 * * *" in text
