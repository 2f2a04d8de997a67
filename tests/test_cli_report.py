"""`kfp-torch report RUN_ID`: a cluster run's report, found where KFP recorded it (cached or not), printed for CI."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kfp
import pytest

from pipelines import kfp_client
from pipelines.cli import main
from pipelines.compile import compile_all
from tests.support.fake_kfp import FakeKfp

TOKEN = "kfp-report-token-5e1d"  # must never show up in any output
REPO = "https://github.com/example/data.git"
KFP_ENV = ("KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "KFP_TOKEN_FILE", "KF_PIPELINES_SA_TOKEN_PATH", "KFP_MLMD_HOST")
HELD_BACK = "report-4"  # the report on the promotion gate's dsl.Else path, in the compiled training pipeline
MARKDOWN = (
    "# Not promoted: accuracy 0.8100 is worse than the baseline's 0.9300\n\nCompared with image-classifier "
    "version 3 in the mlflow registry.\n\n## Scores against the baseline\n\n| score | this model | baseline |\n"
    "| --- | --- | --- |\n| accuracy | 0.8100 | 0.9300 |\n\n## Pictures\n\n### Training curves\n\n"
    "![training curves](data:image/png;base64,iVBORw0KGgo=)\n"
)
HTML = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"></head><body><h1>Not promoted</h1></body></html>'


@pytest.fixture(scope="module")
def training_yaml(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("compiled")
    compile_all(folder)
    return folder / "training_pipeline.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in KFP_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kfp_client, "DEFAULT_SA_TOKEN_PATH", str(tmp_path / "no-such-token"))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-kfp-config" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    reports = {(HELD_BACK, "markdown"): MARKDOWN.encode(), (HELD_BACK, "html"): HTML.encode()}
    with FakeKfp(run_progress=(), pipeline_root=tmp_path / "root", task_artifacts=reports) as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        yield server
    assert server.violations == [], "requests that break the KFP API spec or ML Metadata's messages"


def run_to_the_end(training_yaml: Path, capsys) -> str:
    assert main(["run", str(training_yaml), "--param", f"repo_url={REPO}", "--wait", "--poll-interval", "0"]) == 0
    return re.search(r"run (\S+) started", capsys.readouterr().out)[1]


def test_the_report_is_printed_as_markdown_and_written_as_html(fake, training_yaml, capsys, tmp_path):
    run_id = run_to_the_end(training_yaml, capsys)
    assert main(["report", run_id]) == 0
    assert capsys.readouterr().out == MARKDOWN
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    assert main(["report", run_id, "--format", "html", "--output", str(page)]) == 0
    assert page.read_text() == HTML
    assert capsys.readouterr().out == f"wrote the html report of run {run_id} to {page}\n"
    assert list(page.parent.iterdir()) == [page]  # no staging file left beside it


def test_a_cached_report_is_the_one_of_the_run_that_computed_it(fake, training_yaml, capsys):
    first = run_to_the_end(training_yaml, capsys)
    fake.task_artifacts = {(HELD_BACK, "markdown"): b"# a report this run would have written\n"}
    fake.cache_hits = {HELD_BACK}
    second = run_to_the_end(training_yaml, capsys)
    assert main(["report", second]) == 0
    assert capsys.readouterr().out == MARKDOWN  # what the run that computed it wrote
    assert not list(Path(fake.pipeline_root).glob(f"*/{second}/{HELD_BACK}/*/markdown"))
    assert list(Path(fake.pipeline_root).glob(f"*/{first}/{HELD_BACK}/*/markdown"))


def test_a_run_without_a_finished_report_says_why(fake, training_yaml, capsys):
    fake.run_progress = ("RUNNING",) * 5
    assert main(["run", str(training_yaml), "--param", f"repo_url={REPO}"]) == 0
    run_id = re.search(r"run (\S+) started", capsys.readouterr().out)[1]
    assert main(["report", run_id]) == 1
    err = capsys.readouterr().err
    assert f"run {run_id} has no finished report task (the pipeline's last step): the run has not reached it" in err
    assert "(the run is RUNNING: the report is its last step)" in err
    assert main(["report", "no-such-run"]) == 1
    assert "HTTP 404: run no-such-run not found" in capsys.readouterr().err


def test_the_token_reaches_ml_metadata_and_never_the_output(monkeypatch, training_yaml, capsys, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    reports = {(HELD_BACK, "markdown"): MARKDOWN.encode()}
    with FakeKfp(token=TOKEN, run_progress=(), pipeline_root=tmp_path / "root", task_artifacts=reports) as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        monkeypatch.setenv("KFP_TOKEN_FILE", str(token))
        run_id = run_to_the_end(training_yaml, capsys)
        assert main(["report", run_id]) == 0
        assert capsys.readouterr().out == MARKDOWN
        token.write_text("expired-token")
        assert main(["report", run_id]) == 1
        captured = capsys.readouterr()
    assert "rejected the token file" in captured.err or "HTTP 403" in captured.err
    assert TOKEN not in captured.out + captured.err and "expired-token" not in captured.out + captured.err
    assert server.violations == []


def test_the_readmes_ci_job_posts_the_text_without_the_pictures(fake, training_yaml, capsys, tmp_path):
    """The README's GitHub Actions step, its shell lines run as written (gh itself is not run here)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    job = readme[readme.index("### A report on the pull request") :]
    step = job[job.index("- name: Post the run's report") :]
    script = step[step.index("run: |") + len("run: |") : step.index("```")]
    lines = [line.strip() for line in script.strip().splitlines()]
    assert lines[-1].startswith("gh pr comment") and "--body-file comment.md" in lines[-1]
    run_id = run_to_the_end(training_yaml, capsys)
    shell = "\n".join(lines[:-1]).replace("kfp-torch ", f"{sys_executable()} -m pipelines.cli ")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shell],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "RUN_ID": run_id},
    )
    assert done.returncode == 0, done.stderr
    comment = (tmp_path / "comment.md").read_text()
    assert comment.startswith("# Not promoted:") and "| accuracy | 0.8100 | 0.9300 |" in comment
    assert "## Pictures" not in comment and "data:image" not in comment


def sys_executable() -> str:
    import sys

    return sys.executable


def _env() -> dict:
    import os

    return {name: value for name, value in os.environ.items() if name not in ("KFP_TOKEN", "KFP_TOKEN_FILE")}
