"""make run's terminal: a line per step, the failed step's own error last, the files that exist and the metrics."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from components.deploy.local_target import STATE_DIR_ENV as LOCAL_DEPLOY_DIR_ENV
from pipelines.local import StepProgress, copy_report, describe_run, exception_message, next_step

# What kfp.local writes, colours included (see kfp/local/logging_utils.py and task_dispatcher.py).
KFP_LOCAL_OUTPUT = """\
09:06:08.843 - INFO - Executing task \x1b[96m'dvc-pull'\x1b[0m
09:06:08.843 - INFO - Streamed logs:

    [KFP Executor 2026-11-27 09:06:08,900 INFO]: Got executor_input:
    {
        "inputs": {"parameterValues": {"jobs": 4}}
    }
    [KFP Executor 2026-11-27 09:06:09,400 INFO]: pulled 1799 files


09:06:09.450 - INFO - Task \x1b[96m'dvc-pull'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
09:06:09.451 - INFO - Executing task \x1b[96m'train'\x1b[0m
09:06:09.451 - INFO - Streamed logs:

    [KFP Executor 2026-11-27 09:06:09,500 INFO]: Looking for component `train` in --component_module_path `/tmp/c.py`
    [KFP Executor 2026-11-27 09:06:09,500 INFO]: Loading KFP component "train" from /tmp/c.py (directory "/tmp")
    [KFP Executor 2026-11-27 09:06:09,501 INFO]: Got executor_input:
    {
        "inputs": {
            "parameterValues": {"epochs": 1}
        }
    }
    INFO train: dataset /tmp/root/train/dataset (labels.csv): 10 classes; train 1294, val 144, test 359 images
    Traceback (most recent call last):
      File "<frozen runpy>", line 198, in _run_module_as_main
      File "/venv/lib/python3.11/site-packages/kfp/dsl/executor.py", line 453, in execute
        result = self.func(**func_kwargs)
                 ^^^^^^^^^^^^^^^^^^^^^^^^
    components.common.dataset.DatasetFormatError: 2 of 1438 image(s) in the train split under /d cannot be read; \
fix or remove them:
      data/raw/images/0001.png is not a readable PNG or JPEG image
      data/raw/images/0002.png is not a readable PNG or JPEG image


09:06:12.000 - ERROR - Task \x1b[96m'train'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
"""


def test_the_terminal_gets_a_line_a_step_and_the_log_gets_everything():
    log, terminal = io.StringIO(), io.StringIO()
    progress = StepProgress(log, terminal)
    for chunk in (KFP_LOCAL_OUTPUT[:100], KFP_LOCAL_OUTPUT[100:]):  # lines may arrive in pieces
        progress.write(chunk)
    shown = terminal.getvalue().splitlines()
    assert shown[0] == "  dvc-pull ..."
    assert shown[1].startswith("  dvc-pull success in ") and shown[2] == "  train ..."
    assert shown[3].startswith("  train failure in ")
    # A failed step shows its own last lines before the traceback, not the executor input of the steps before it.
    assert shown[4:] == [
        "    | INFO train: dataset /tmp/root/train/dataset (labels.csv): 10 classes; train 1294, "
        "val 144, test 359 images"
    ]
    assert not any("executor_input" in line or "Streamed logs" in line or "File " in line for line in shown)
    assert log.getvalue() == KFP_LOCAL_OUTPUT
    # Its error, whole, on one line: the library's own exception type left out (its message stands alone).
    assert progress.failure.task == "train"
    assert progress.failure.message == (
        "2 of 1438 image(s) in the train split under /d cannot be read; fix or remove them: "
        "data/raw/images/0001.png is not a readable PNG or JPEG image; "
        "data/raw/images/0002.png is not a readable PNG or JPEG image"
    )


def traceback_of(*exception_lines: str, indent: str = "    ") -> list[str]:
    frames = ["Traceback (most recent call last):", '  File "/x.py", line 1, in <module>', "    f()"]
    return [indent + line for line in (*frames, *exception_lines)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["KeyError: 'weights'"], "KeyError: 'weights'"),
        (["torch.OutOfMemoryError: CUDA out of memory."], "OutOfMemoryError: CUDA out of memory."),
        (["components.dvc_pull.pull.DvcPullError: path 'x' is not tracked"], "path 'x' is not tracked"),
        (["KeyboardInterrupt"], "KeyboardInterrupt"),
        (["ValueError: epochs must be an integer >= 1, got 0"], "ValueError: epochs must be an integer >= 1, got 0"),
    ],
)
def test_the_exception_a_traceback_ends_with(lines, message):
    assert exception_message(traceback_of(*lines)) == message


def test_a_chained_exception_gives_the_last_one_and_the_output_before_the_first():
    chained = traceback_of("OSError: disk full") + [
        "",
        "    The above exception was the direct cause of the following exception:",
        "",
        *traceback_of("components.common.storage.StorageError: cannot write s3://b/model"),
    ]
    progress = StepProgress(io.StringIO(), io.StringIO())
    lines = ["09:00:00.000 - INFO - Executing task 'train'", "    epoch 1 done", *chained]
    progress.write("\n".join([*lines, "09:00:01.000 - ERROR - Task 'train' finished with status FAILURE", ""]))
    assert progress.failure.context == ["epoch 1 done"]
    assert progress.failure.message == "cannot write s3://b/model"


def test_a_retried_step_gives_its_last_attempts_error():
    progress = StepProgress(io.StringIO(), io.StringIO())
    for attempt in ("disk full", "cache corrupt"):
        lines = ["09:00:00.000 - INFO - Executing task 'train'", *traceback_of(f"OSError: {attempt}")]
        progress.write("\n".join([*lines, "09:00:01.000 - ERROR - Task 'train' finished with status FAILURE", ""]))
    assert progress.failure.message == "OSError: cache corrupt"


def test_a_step_without_a_traceback_gives_its_last_line():
    progress = StepProgress(io.StringIO(), io.StringIO())
    progress.write(
        "09:00:00.000 - INFO - Executing task 'train'\n    epoch 1 done\n    Killed\n\n"
        "09:00:01.000 - ERROR - Task 'train' finished with status FAILURE\n"
    )
    assert (progress.failure.task, progress.failure.message) == ("train", "Killed")


def write_task(run_dir: Path, task: str, output: dict, files: tuple[str, ...] = ()) -> None:
    (run_dir / task).mkdir(parents=True)
    for name in files:
        (run_dir / task / name).mkdir()
    (run_dir / task / "executor_output.json").write_text(json.dumps(output))


def artifact(run_dir: Path, task: str, name: str, **metadata) -> dict:
    return {name: {"artifacts": [{"name": name, "uri": str(run_dir / task / name), "metadata": metadata}]}}


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A kfp.local run directory as a promoted run leaves it: Metrics and ClassificationMetrics without files."""
    run = tmp_path / "pytorch-training-2026-12-01-10-00-00-000000"
    metrics = {"train_loss_epoch_1": 0.9, "train_loss": 0.21934, "val_accuracy": 0.985294}
    write_task(
        run,
        "train",
        {"artifacts": artifact(run, "train", "model") | artifact(run, "train", "metrics", **metrics)},
        ("model",),
    )
    scores = {
        "accuracy": 0.983287,
        "loss": 0.159415,
        "macro_f1": 0.982896,
        "test_samples": 359,
        "onnx_max_difference": 4.87e-07,
        "promote": True,
        "reason": "accuracy 0.9833 meets the threshold 0.9500",
    }
    evaluated = artifact(run, "evaluate", "metrics", **scores) | artifact(run, "evaluate", "confusion")
    write_task(run, "evaluate", {"artifacts": evaluated, "parameterValues": {"Output": True}})
    (run / "evaluate" / "metrics").write_text("{}")  # evaluate writes its scores to the artifact's file too
    bento = artifact(run, "build-bento", "bento", bento_tag="image-classifier:abc123")
    write_task(run, "build-bento", {"artifacts": bento}, ("bento",))
    return run


def test_the_summary_lists_only_files_that_exist_and_shows_the_metrics_as_values(finished_run):
    summary = describe_run(finished_run)
    files = summary.split("Files:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in files] == ["train.model", "evaluate.metrics", "build-bento.bento"]
    assert "train.metrics" not in summary and "evaluate.confusion" not in summary
    rows = {
        tuple(line.split(maxsplit=2)[:2]): line.split(maxsplit=2)[2]
        for line in summary.split("Metrics:\n")[1].splitlines()[1:]
    }
    assert rows[("evaluate", "accuracy")] == "0.9833" and rows[("evaluate", "macro_f1")] == "0.9829"
    assert rows[("evaluate", "loss")] == "0.1594" and rows[("evaluate", "test_samples")] == "359"
    assert rows[("evaluate", "onnx_max_difference")] == "4.87e-07"
    assert rows[("evaluate", "promote")] == "true"
    assert rows[("evaluate", "reason")] == "accuracy 0.9833 meets the threshold 0.9500"
    assert ("train", "train_loss_epoch_1") not in rows and rows[("train", "train_loss")] == "0.2193"
    outputs = summary.split("Outputs:\n")[1].split("\n\n")[0]
    assert re.search(r"^  evaluate\.Output \(promotion decision\) +true$", outputs, re.MULTILINE)


def test_the_report_that_ran_is_copied_into_the_run_directory_by_name(finished_run):
    assert copy_report(finished_run) == []  # a run without a report step
    outputs = artifact(finished_run, "report-3", "html") | artifact(finished_run, "report-3", "markdown")
    write_task(finished_run, "report-3", {"artifacts": outputs})
    (finished_run / "report-3" / "html").write_text("<!DOCTYPE html><html></html>")
    (finished_run / "report-3" / "markdown").write_text("# Promoted: accuracy 0.9833\n")
    write_task(finished_run, "reporter", {"artifacts": artifact(finished_run, "reporter", "html")})  # not a report
    (finished_run / "reporter" / "html").write_text("<p>another step's</p>")
    assert copy_report(finished_run) == [finished_run / "report.html", finished_run / "report.md"]
    assert (finished_run / "report.html").read_text() == "<!DOCTYPE html><html></html>"
    assert (finished_run / "report.md").read_text() == "# Promoted: accuracy 0.9833\n"
    files = describe_run(finished_run).split("Files:\n")[1].split("\n\n")[0]
    assert "report-3.html" in files and "report-3.markdown" in files  # the step's own outputs, listed as any


def test_after_a_bento_the_next_step_is_make_serve(finished_run, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(LOCAL_DEPLOY_DIR_ENV, str(tmp_path / ".local" / "deploy"))
    assert next_step(finished_run, tmp_path / "my photos" / "a.jpg").splitlines() == [
        "Next: serve the bento image-classifier:abc123 on http://127.0.0.1:3000 with",
        "  make serve",
        "and send it an image:",
        "  curl -X POST http://127.0.0.1:3000/predict -F files=@'my photos/a.jpg'",  # relative to here, quoted
    ]
    # Deployed elsewhere than make serve reads: the command that serves from there; an image by its absolute path.
    monkeypatch.setenv(LOCAL_DEPLOY_DIR_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.chdir(finished_run)
    _, command, _, curl = next_step(finished_run, tmp_path / "a.jpg").splitlines()
    assert command == f"  python -m components.deploy.local_target serve --state-dir {tmp_path}/elsewhere"
    assert curl.endswith(f"-F files=@{tmp_path}/a.jpg")
    assert next_step(finished_run).endswith("-F files=@IMAGE")


def test_without_a_bento_the_gate_says_why(finished_run):
    (finished_run / "build-bento" / "executor_output.json").unlink()
    output = json.loads((finished_run / "evaluate" / "executor_output.json").read_text())
    output["artifacts"]["metrics"]["artifacts"][0]["metadata"] |= {"promote": False, "reason": "accuracy 0.2 is below"}
    (finished_run / "evaluate" / "executor_output.json").write_text(json.dumps(output))
    assert (
        next_step(finished_run) == "No bento was built: the promotion gate held the model back (accuracy 0.2 is below)."
    )


def test_a_failed_step_ends_the_output_with_its_own_error(digits_repo, tmp_path):
    """A real run whose dvc-pull fails: its message is the last line, after kfp.local's generic RuntimeError."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "local", "--workdir", str(tmp_path)]
        + ["--repo", digits_repo.repo_url, "--data-path", "data/rawx", "--epochs", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    lines = done.stdout.rstrip("\n").splitlines()
    assert done.returncode == 1, done.stdout
    assert lines[-1] == (
        f"kfp-torch: error: step dvc-pull failed: path 'data/rawx' is not tracked by DVC at {digits_repo.commit[:12]}, "
        "nor inside a tracked directory; tracked paths: data/raw"
    )
    assert lines[-2] == f"Full logs of every step: {tmp_path / 'pipeline-root' / 'run.log'}"
    assert "  dvc-pull failure in " in done.stdout and "Traceback" not in done.stdout
    assert "Traceback (most recent call last):" in (tmp_path / "pipeline-root" / "run.log").read_text()


@pytest.mark.parametrize("distributed", [False, True])
def test_kfp_local_runs_retry_no_step(distributed):
    """On one machine no pod is lost: a step that fails fails for its own reason, and its message comes at once."""
    from pipelines.distributed_training_pipeline import distributed_training_pipeline
    from pipelines.local import local_pipeline
    from pipelines.training_pipeline import training_pipeline

    def retried(pipeline) -> dict[str, int]:
        tasks = pipeline.pipeline_spec.root.dag.tasks.items()
        return {name: task.retry_policy.max_retry_count for name, task in tasks if task.retry_policy.max_retry_count}

    cluster = distributed_training_pipeline if distributed else training_pipeline
    assert retried(cluster)  # the cluster's pipeline retries the step a lost pod can fail
    assert retried(local_pipeline(distributed)) == {}
