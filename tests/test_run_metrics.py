"""A run's scores read back from the artifact store, laid out as KFP lays it out, and the file evaluate writes there."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import kfp
import pytest

from components.common.storage import publish
from components.evaluate.gate import PromotionDecision
from components.evaluate.metrics_file import MetricsFileError, metrics_record, parse_metrics, write_metrics
from components.evaluate.scores import Evaluation, SharedComparison
from pipelines.distributed_training_pipeline import PIPELINE_NAME as DISTRIBUTED_PIPELINE_NAME
from pipelines.distributed_training_pipeline import distributed_training_pipeline
from pipelines.run_metrics import (
    DEFAULT_PIPELINE_ROOT,
    RunMetricsError,
    find_output_files,
    read_all_run_metrics,
    read_run_metrics,
)
from pipelines.training_pipeline import PIPELINE_NAME, training_pipeline
from tests.support.fake_kfp import FakeKfp

RUN_ID = "8f1d2c3b-0000-4000-8000-00000000c0de"
SALT = "2b6a7a61-9c1e-4f5e-a0a4-0d4b1e2f3a4c"  # the driver's outputURISalt (newer KFP)
SCORES = {
    "accuracy": 0.973214,
    "loss": 0.0912,
    "macro_f1": 0.971877,
    "test_samples": 359,
    "onnx_max_difference": 2.4e-07,
    "recall_cat": 1.0,
    "recall_dog": 0.944444,
    "promote": True,
    "reason": "accuracy 0.9732 meets the threshold 0.9500",
}
LAYOUTS = {
    "unsalted": "{task}/{output}",  # <root>/<pipeline>/<run>/<task>/<output>
    "salted": "{task}/" + SALT + "/{output}",  # <root>/<pipeline>/<run>/<task>/<salt>/<output>
}


def seed(root: Path, layout: str, pipeline: str = PIPELINE_NAME, run_id: str = RUN_ID, scores: dict = SCORES) -> None:
    """What a finished run leaves under a local pipeline root: evaluate's files and some of its neighbours'."""
    run = root / pipeline / run_id
    for task, output, content in (
        ("evaluate", "metrics", json.dumps(scores)),
        ("evaluate", "confusion", "{}"),
        ("evaluate", "executor-logs", "INFO evaluate: promote=True"),
        ("evaluate-2", "metrics", json.dumps(scores | {"accuracy": 0.1})),  # another task, not ours
        ("train", "model", "weights"),
    ):
        path = run / LAYOUTS[layout].format(task=task, output=output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


# --- the file ---------------------------------------------------------------------------------------


def test_the_record_is_the_scores_then_the_decision():
    candidate = Evaluation(0.9732141, 0.09123456, 0.9718771, {"cat": 1.0, "dog": 0.9444444}, [], ["cat", "dog"], 359)
    candidate.onnx_max_difference = 2.4321e-07
    decision = PromotionDecision(False, "accuracy 0.9732 is worse than the baseline's 0.9800", 0.9732, 0.95, 0.98)
    baseline = Evaluation(0.98, None, 0.975, {}, [], ["cat", "dog"], 359)
    shared = SharedComparison(["cat", "dog"], [], [], candidate, baseline)
    record = metrics_record(candidate, decision, shared, baseline="the production model: digits version 3")
    assert record == {
        "accuracy": 0.973214,
        "loss": 0.091235,
        "macro_f1": 0.971877,
        "test_samples": 359,
        "onnx_max_difference": 2.43e-07,
        "recall_cat": 1.0,
        "recall_dog": 0.944444,
        "baseline_accuracy": 0.98,
        "baseline_macro_f1": 0.975,
        "compared_samples": 359,
        "compared_classes": 2,
        "promote": False,
        "reason": "accuracy 0.9732 is worse than the baseline's 0.9800",
        "baseline": "the production model: digits version 3",
    }
    assert parse_metrics(json.dumps(record), "the record") == record  # the text field passes the file's check
    candidate.onnx_max_difference = None  # not checked: left out, not null
    assert "onnx_max_difference" not in metrics_record(candidate, decision)


def test_the_file_round_trips(tmp_path):
    write_metrics(tmp_path / "out" / "metrics", SCORES)
    assert parse_metrics((tmp_path / "out" / "metrics").read_bytes(), "the file") == SCORES


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", r"^minio://b/metrics is not JSON"),
        (b"\xff\xfe", r"^minio://b/metrics is not JSON"),
        (b"[1, 2]", r"holds a JSON object, not list"),
        (json.dumps({"accuracy": 0.9, "reason": "r"}).encode(), r"no 'promote'"),
        (json.dumps({"accuracy": 0.9, "promote": "yes", "reason": "r"}).encode(), r"'promote' is 'yes', not a bool"),
        (
            json.dumps({"accuracy": "0.9", "promote": True, "reason": "r"}).encode(),
            r"'accuracy' is '0.9', not a finite",
        ),
        (json.dumps({"accuracy": True, "promote": True, "reason": "r"}).encode(), r"'accuracy' is True, not a finite"),
        (b'{"accuracy": NaN, "promote": true, "reason": "r"}', r"'accuracy' is nan, not a finite"),
        (json.dumps({"promote": True, "reason": "r", "baseline": 3}).encode(), r"'baseline' is 3, not text"),
    ],
)
def test_a_file_that_is_not_a_metrics_file_is_named(content, message):
    with pytest.raises(MetricsFileError, match=message):
        parse_metrics(content, "minio://b/metrics")


def test_nothing_malformed_is_written(tmp_path):
    with pytest.raises(MetricsFileError, match=r"metric 'accuracy' is inf, not a finite number"):
        write_metrics(tmp_path / "metrics", SCORES | {"accuracy": float("inf")})
    assert not (tmp_path / "metrics").exists()


# --- finding it under a pipeline root ----------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scores_are_read_from_a_local_pipeline_root_in_either_layout(tmp_path, layout):
    seed(tmp_path, layout)
    assert read_run_metrics(RUN_ID, pipeline_root=str(tmp_path)) == SCORES
    assert read_run_metrics(RUN_ID, pipeline_root=f"file://{tmp_path}/") == SCORES
    [uri] = find_output_files(RUN_ID, pipeline_root=str(tmp_path))
    assert uri == f"{tmp_path}/{PIPELINE_NAME}/{RUN_ID}/" + LAYOUTS[layout].format(task="evaluate", output="metrics")
    assert read_run_metrics(RUN_ID, pipeline_root=str(tmp_path), task_name="evaluate-2")["accuracy"] == 0.1


def test_a_file_inside_some_artifact_directory_is_not_the_output(tmp_path):
    seed(tmp_path, "salted")
    nested = tmp_path / PIPELINE_NAME / RUN_ID / "evaluate" / SALT / "confusion-dir" / "metrics"
    nested.parent.mkdir(parents=True)
    nested.write_text("{}")
    assert read_run_metrics(RUN_ID, pipeline_root=str(tmp_path)) == SCORES


def test_the_default_pipeline_root_and_names_are_kfps_and_the_compiled_pipelines():
    assert DEFAULT_PIPELINE_ROOT == "minio://mlpipeline/v2/artifacts"
    for pipeline, name in (
        (training_pipeline, PIPELINE_NAME),
        (distributed_training_pipeline, DISTRIBUTED_PIPELINE_NAME),
    ):
        spec = pipeline.pipeline_spec
        assert spec.pipeline_info.name == name
        assert spec.root.dag.tasks["evaluate"].component_ref.name == "comp-evaluate"
        assert "metrics" in spec.components["comp-evaluate"].output_definitions.artifacts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scores_are_read_from_minio_in_either_layout(kfp_minio, tmp_path, layout):
    run_id = f"run-{layout}"
    seed(tmp_path / "store", layout, run_id=run_id)
    publish(tmp_path / "store", "minio://mlpipeline/v2/artifacts")  # as KFP's launcher uploaded them
    assert read_run_metrics(run_id) == SCORES  # KFP's default pipeline root
    searched = f"under minio://mlpipeline/v2/artifacts/{PIPELINE_NAME}/{run_id}0/evaluate/:"  # not run-…'s
    with pytest.raises(RunMetricsError, match=re.escape(searched)):
        read_run_metrics(f"{run_id}0")


def test_no_scores_says_where_it_looked_and_why_there_may_be_none(tmp_path):
    seed(tmp_path, "salted")
    prefix = f"{tmp_path}/{PIPELINE_NAME}/another-run/evaluate/"
    with pytest.raises(RunMetricsError) as raised:
        read_run_metrics("another-run", pipeline_root=str(tmp_path))
    message = str(raised.value)
    assert f"no 'metrics' output of task 'evaluate' under {prefix}:" in message
    assert "may not have reached evaluate" in message and "KFP's cache" in message
    with pytest.raises(RunMetricsError, match=rf"/{DISTRIBUTED_PIPELINE_NAME}/{RUN_ID}/evaluate/: "):
        read_run_metrics(RUN_ID, pipeline_name=DISTRIBUTED_PIPELINE_NAME, pipeline_root=str(tmp_path))


def test_a_task_run_once_per_parallelfor_iteration_is_not_picked_at_random(tmp_path):
    seed(tmp_path, "salted")
    second = tmp_path / PIPELINE_NAME / RUN_ID / "evaluate" / "another-salt" / "metrics"
    second.parent.mkdir()
    second.write_text(json.dumps(SCORES | {"accuracy": 0.5}))
    with pytest.raises(
        RunMetricsError,
        match=rf"wrote 2 'metrics' outputs .*ParallelFor.*{SALT}/metrics, .*another-salt/metrics; read_all_run_metrics",
    ):
        read_run_metrics(RUN_ID, pipeline_root=str(tmp_path))
    every = read_all_run_metrics(RUN_ID, pipeline_root=str(tmp_path))
    assert sorted(scores["accuracy"] for scores in every.values()) == [0.5, SCORES["accuracy"]]
    assert str(second) in every


def test_a_malformed_file_is_named(tmp_path):
    seed(tmp_path, "salted", scores={"accuracy": 0.9})
    uri = f"{tmp_path}/{PIPELINE_NAME}/{RUN_ID}/evaluate/{SALT}/metrics"
    with pytest.raises(RunMetricsError, match=rf"^{uri}: no 'promote' .*expected what evaluate writes"):
        read_run_metrics(RUN_ID, pipeline_root=str(tmp_path))


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_names_that_would_change_the_prefix_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=r"run_id must be a non-empty name without '/'"):
        read_run_metrics(bad, pipeline_root=str(tmp_path))
    with pytest.raises(ValueError, match=r"pipeline_root must name a directory or bucket, got ''"):
        read_run_metrics(RUN_ID, pipeline_root="")


# --- a run through kfp.Client, the backend faked -------------------------------------------------------


@pytest.fixture
def client_for(monkeypatch, tmp_path):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))

    def client(server: FakeKfp) -> kfp.Client:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # "only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
            return kfp.Client(host=server.url)

    return client


def test_a_finished_runs_scores_are_read_where_the_backend_left_them(client_for, tmp_path):
    """The fake backend writes evaluate's file under the compiled pipeline's own name and task name."""
    root = tmp_path / "pipeline-root"
    artifacts = {("evaluate", "metrics"): json.dumps(SCORES).encode()}
    with FakeKfp(run_progress=("RUNNING",), pipeline_root=root, task_artifacts=artifacts) as server:
        client = client_for(server)
        arguments = {"repo_url": "https://example.com/data.git"}
        for pipeline, name in (
            (training_pipeline, PIPELINE_NAME),
            (distributed_training_pipeline, DISTRIBUTED_PIPELINE_NAME),
        ):
            run = client.create_run_from_pipeline_func(pipeline, arguments=arguments, experiment_name="metrics")
            with pytest.raises(RunMetricsError, match=r"the run may not have reached evaluate \(still running"):
                read_run_metrics(run.run_id, pipeline_name=name, pipeline_root=str(root))
            assert client.wait_for_run_completion(run.run_id, 60, sleep_duration=0).state == "SUCCEEDED"
            assert read_run_metrics(run.run_id, pipeline_name=name, pipeline_root=str(root)) == SCORES
        server.outcome = "FAILED"  # train fails: evaluate never runs, and the backend leaves no file of it
        failed = client.create_run_from_pipeline_func(training_pipeline, arguments=arguments, experiment_name="metrics")
        assert client.wait_for_run_completion(failed.run_id, 60, sleep_duration=0).state == "FAILED"
        with pytest.raises(RunMetricsError, match=r"the run may not have reached evaluate"):
            read_run_metrics(failed.run_id, pipeline_root=str(root))
        assert sorted(path.relative_to(root).parts[0] for path in root.rglob("metrics")) == [
            DISTRIBUTED_PIPELINE_NAME,
            PIPELINE_NAME,
        ]
    assert server.violations == []


# --- what the evaluate component itself writes -----------------------------------------------------------


@pytest.mark.slow
def test_the_file_evaluate_writes_is_what_it_logs_and_read_back_from_the_store(digits_dir, tmp_path, kfp_minio):
    """evaluate run by kfp.local; its metrics file uploaded where KFP's launcher would put it, then read."""
    from kfp import local

    from components.train.trainer import TrainConfig, train
    from tests.support.evaluate_pipeline import gate_against_baseline

    train(digits_dir, tmp_path / "model", TrainConfig(epochs=2, augment=False))
    local_root = tmp_path / "kfp-local"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(local_root), raise_on_error=True)
    model = str(tmp_path / "model")
    gate_against_baseline(dataset_uri=str(digits_dir), candidate_uri=model, baseline_uri=model, threshold=0.0)
    [run_dir] = local_root.glob("gate-against-baseline-*")
    written = run_dir / "evaluate" / "metrics"
    (logged,) = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())["artifacts"]["metrics"][
        "artifacts"
    ]
    scores = parse_metrics(written.read_bytes(), str(written))
    assert scores == {key: value for key, value in logged["metadata"].items() if key != "display_name"}
    assert scores["promote"] is True and "not worse than the baseline" in scores["reason"]
    assert sorted(name for name in scores if name.startswith("recall_")) == sorted(f"recall_{i}" for i in range(10))

    store = tmp_path / "upload" / "evaluate" / SALT
    store.mkdir(parents=True)
    (store / "metrics").write_bytes(written.read_bytes())
    publish(tmp_path / "upload", f"{DEFAULT_PIPELINE_ROOT}/{PIPELINE_NAME}/run-from-kfp-local")
    assert read_run_metrics("run-from-kfp-local") == scores
