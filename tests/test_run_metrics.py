"""A run's scores read back where KFP recorded evaluate's output for that run (cached or not), and the file evaluate
writes there."""

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
    EVALUATE_TASK,
    METRICS_OUTPUT,
    RunMetricsError,
    read_all_run_metrics,
    read_run_metrics,
)
from pipelines.training_pipeline import PIPELINE_NAME, training_pipeline
from tests.support.fake_kfp import DEFAULT_PIPELINE_ROOT, FakeKfp
from tests.support.fake_mlmd import RecordedOutput

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


# --- a run through kfp.Client, the backend faked: ML Metadata says where evaluate's output is -------------


@pytest.fixture
def client_for(monkeypatch, tmp_path):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))
    monkeypatch.delenv("KFP_MLMD_HOST", raising=False)

    def client(server: FakeKfp) -> kfp.Client:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # "only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
            return kfp.Client(host=server.url)

    return client


ARGUMENTS = {"repo_url": "https://example.com/data.git"}


def finished_run(client: kfp.Client, pipeline=None) -> str:
    run = client.create_run_from_pipeline_func(pipeline or training_pipeline, arguments=ARGUMENTS, experiment_name="m")
    assert client.wait_for_run_completion(run.run_id, 60, sleep_duration=0).state in ("SUCCEEDED", "FAILED")
    return run.run_id


def evaluate_metrics(server: FakeKfp) -> list:
    """The artifacts ML Metadata holds for evaluate's metrics output."""
    return [a for a in server.metadata.artifacts.values() if re.search(r"/evaluate/[^/]+/metrics$", a.uri)]


def test_a_finished_runs_scores_are_read_where_ml_metadata_says_they_are(client_for, tmp_path):
    root = tmp_path / "pipeline-root"
    artifacts = {("evaluate", "metrics"): json.dumps(SCORES).encode()}
    with FakeKfp(run_progress=("RUNNING",), pipeline_root=root, task_artifacts=artifacts) as server:
        client = client_for(server)
        for pipeline, name in (
            (training_pipeline, PIPELINE_NAME),
            (distributed_training_pipeline, DISTRIBUTED_PIPELINE_NAME),
        ):
            run = client.create_run_from_pipeline_func(pipeline, arguments=ARGUMENTS, experiment_name="metrics")
            with pytest.raises(RunMetricsError, match=r"has no finished task 'evaluate': the run has not reached it"):
                read_run_metrics(client, run.run_id)
            assert client.wait_for_run_completion(run.run_id, 60, sleep_duration=0).state == "SUCCEEDED"
            assert read_run_metrics(client, run.run_id) == SCORES
            [uri] = read_all_run_metrics(client, run.run_id)
            assert uri.startswith(f"{root}/{name}/{run.run_id}/evaluate/") and uri.endswith("/metrics")
        server.outcome = "FAILED"  # train fails: evaluate never runs
        failed = finished_run(client)
        with pytest.raises(RunMetricsError, match=r"no finished task 'evaluate': the run has not reached it, failed"):
            read_run_metrics(client, failed)
    assert server.violations == []


def test_a_cached_evaluates_scores_are_those_of_the_run_that_computed_them(client_for, tmp_path):
    """The bug: a cached evaluate leaves its outputs under the run that computed them, and looking under this
    run's directory found nothing. KFP records, for this run, a CACHED execution linked to those outputs."""
    root = tmp_path / "pipeline-root"
    artifacts = {("evaluate", "metrics"): json.dumps(SCORES).encode()}
    with FakeKfp(run_progress=(), pipeline_root=root, task_artifacts=artifacts) as server:
        client = client_for(server)
        first = finished_run(client)
        server.task_artifacts = {("evaluate", "metrics"): json.dumps(SCORES | {"accuracy": 0.5}).encode()}
        server.cache_hits = {"evaluate"}
        second = finished_run(client)
        assert not list(root.glob(f"{PIPELINE_NAME}/{second}/evaluate/*/metrics"))  # nothing under this run
        assert read_run_metrics(client, second) == SCORES  # the first run's file, as ML Metadata links it
        [uri] = read_all_run_metrics(client, second)
        assert f"/{first}/evaluate/" in uri
        # What the REST API says of it: the task succeeded, its executor pod was skipped; no artifact, no id.
        details = client.get_run(second).run_details.task_details
        assert [d.state for d in details if d.display_name == "evaluate"] == ["SUCCEEDED"]
        skipped = [d for d in details if d.state == "SKIPPED"]
        assert [d.display_name for d in skipped] == ["executor"]  # evaluate's pod: the only task from the cache
        [evaluate] = [d for d in details if d.display_name == "evaluate"]
        assert skipped[0].pod_name.rsplit("-", 1)[1] == evaluate.child_tasks[0].pod_name.rsplit("-", 1)[1]
        assert all(not d.outputs and not d.execution_id for d in details)
        server.cache_hits = set()
        third = finished_run(client)  # computed again: its own file, under its own run
        assert read_run_metrics(client, third)["accuracy"] == 0.5
    assert server.violations == []


def test_a_task_run_once_per_parallelfor_iteration_is_not_picked_at_random(client_for, tmp_path):
    with FakeKfp(run_progress=(), pipeline_root=tmp_path) as server:
        client = client_for(server)
        run_id = finished_run(client)
        context = server.metadata.record_run(run_id, PIPELINE_NAME, str(tmp_path))  # the run's own, found again
        uris = []
        for accuracy in (0.5, 0.25):
            uri = tmp_path / f"iteration-{accuracy}" / "metrics"
            uri.parent.mkdir()
            uri.write_text(json.dumps(SCORES | {"accuracy": accuracy}))
            server.metadata.record_task(context, "evaluate-2", {"metrics": RecordedOutput(str(uri), "system.Metrics")})
            uris.append(str(uri))
        with pytest.raises(RunMetricsError, match=r"has 2 'metrics' outputs .*ParallelFor.*; read_all_run_metrics"):
            read_run_metrics(client, run_id, task_name="evaluate-2")
        every = read_all_run_metrics(client, run_id, task_name="evaluate-2")
        assert sorted(scores["accuracy"] for scores in every.values()) == [0.25, 0.5] and sorted(every) == sorted(uris)
    assert server.violations == []


def test_a_malformed_or_missing_file_is_named(client_for, tmp_path):
    artifacts = {("evaluate", "metrics"): json.dumps({"accuracy": 0.9}).encode()}
    with FakeKfp(run_progress=(), pipeline_root=tmp_path, task_artifacts=artifacts) as server:
        client = client_for(server)
        run_id = finished_run(client)
        [uri] = [str(path) for path in tmp_path.glob(f"{PIPELINE_NAME}/{run_id}/evaluate/*/metrics")]
        with pytest.raises(RunMetricsError, match=rf"^{re.escape(uri)}: no 'promote' .*expected what evaluate writes"):
            read_run_metrics(client, run_id)
        Path(uri).unlink()  # recorded in ML Metadata, gone from the store
        with pytest.raises(RunMetricsError, match=r"cannot read evaluate's 'metrics' \(artifact \d+\): cannot read"):
            read_run_metrics(client, run_id)


def test_a_run_ml_metadata_does_not_know_is_named(client_for):
    with FakeKfp() as server:
        client = client_for(server)
        with pytest.raises(RunMetricsError, match=rf"ML Metadata at {re.escape(server.url)} has no run no-such-run"):
            read_run_metrics(client, "no-such-run")
        for bad in ("", "a/b", "../x"):
            with pytest.raises(ValueError, match=r"run_id must be a run's id"):
                read_run_metrics(client, bad)


def test_the_default_names_are_the_compiled_pipelines(tmp_path):
    for pipeline, name in (
        (training_pipeline, PIPELINE_NAME),
        (distributed_training_pipeline, DISTRIBUTED_PIPELINE_NAME),
    ):
        spec = pipeline.pipeline_spec
        assert spec.pipeline_info.name == name
        assert spec.root.dag.tasks[EVALUATE_TASK].component_ref.name == "comp-evaluate"
        assert METRICS_OUTPUT in spec.components["comp-evaluate"].output_definitions.artifacts


def test_scores_are_read_from_minio_where_ml_metadata_says(client_for, kfp_minio, tmp_path):
    with FakeKfp(run_progress=()) as server:  # the pipeline root: KFP's default, minio://mlpipeline/v2/artifacts
        client = client_for(server)
        run_id = finished_run(client)
        [artifact] = evaluate_metrics(server)
        assert artifact.uri.startswith(f"{DEFAULT_PIPELINE_ROOT}/{PIPELINE_NAME}/{run_id}/evaluate/")
        store = tmp_path / "store"
        (store / "metrics").parent.mkdir(parents=True)
        (store / "metrics").write_text(json.dumps(SCORES))
        publish(store, artifact.uri.rsplit("/", 1)[0])  # as KFP's launcher uploaded it
        assert read_run_metrics(client, run_id) == SCORES


# --- what the evaluate component itself writes -----------------------------------------------------------


@pytest.mark.slow
def test_the_file_evaluate_writes_is_what_it_logs_and_read_back_from_the_store(
    digits_dir, tmp_path, kfp_minio, client_for
):
    """evaluate run by kfp.local; its metrics file uploaded where KFP's launcher would put it, then read."""
    from kfp import local

    from components.train.trainer import TrainConfig, train_model
    from tests.support.evaluate_pipeline import gate_against_baseline

    train_model(digits_dir, tmp_path / "model", TrainConfig(epochs=2, augment=False))
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

    with FakeKfp(run_progress=()) as server:
        client = client_for(server)
        run_id = finished_run(client)
        [artifact] = evaluate_metrics(server)
        upload = tmp_path / "upload"
        upload.mkdir()
        (upload / "metrics").write_bytes(written.read_bytes())
        publish(upload, artifact.uri.rsplit("/", 1)[0])
        assert read_run_metrics(client, run_id) == scores
