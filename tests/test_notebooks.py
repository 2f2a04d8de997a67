"""The notebooks run top to bottom: the quickstart locally, the cluster one against a KFP API test server."""

from __future__ import annotations

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
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def has_image(cell) -> bool:
    return any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


@pytest.mark.slow
def test_quickstart_runs_the_pipeline_and_draws_its_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_TORCH_LIFECYCLE_WORKDIR", str(tmp_path))
    monkeypatch.setenv("QUICKSTART_EPOCHS", "4")
    notebook = execute("quickstart.ipynb")
    assert sum(has_image(cell) for cell in notebook.cells) == 2  # learning curves, confusion matrix
    assert "promoted: True" in outputs_text(notebook)
    assert list(tmp_path.glob("pipeline-root/pytorch-training-*/build-bento/bento"))


def test_cluster_notebook_skips_the_cluster_cells_without_a_host(tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.setenv("KFP_TORCH_LIFECYCLE_WORKDIR", str(tmp_path))
    text = outputs_text(execute("cluster.ipynb"))
    assert text.count("skipped: set KFP_HOST") == 3
    assert (tmp_path / "pipelines/training_pipeline.yaml").is_file()


@pytest.mark.slow
def test_cluster_notebook_uploads_runs_and_schedules_against_the_kfp_api(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("notebook-token-sentinel")
    with FakeKfp(token="notebook-token-sentinel") as kfp:
        monkeypatch.setenv("KFP_HOST", kfp.url)
        monkeypatch.setenv("KFP_TOKEN_FILE", str(token))
        monkeypatch.setenv("KFP_TORCH_LIFECYCLE_WORKDIR", str(tmp_path))
        notebook = execute("cluster.ipynb")
    assert kfp.violations == []
    assert len(kfp.pipelines) == 1 and len(kfp.versions) == 1  # the second upload added nothing
    assert len(kfp.runs) == 1 and "exit code 0" in outputs_text(notebook)
    [schedule] = kfp.recurring_runs.values()
    assert schedule["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert "notebook-token-sentinel" not in outputs_text(notebook)
