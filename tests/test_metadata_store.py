"""ML Metadata read over gRPC-Web as the Kubeflow UI reads it, against a fake that speaks ML Metadata's real protos."""

from __future__ import annotations

import re
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kfp
import pytest
from kfp.client import ServiceAccountTokenVolumeCredentials

from pipelines.metadata_store import (
    IN_CLUSTER_ENVOY,
    MESSAGES,
    MetadataStore,
    MetadataStoreError,
    for_client,
    metadata_address,
)
from pipelines.run_artifacts import recorded_tasks, task_output
from tests.support.fake_kfp import FakeKfp
from tests.support.fake_mlmd import RecordedOutput


@pytest.fixture(autouse=True)
def no_local_kfp_context(monkeypatch, tmp_path):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))
    monkeypatch.delenv("KFP_MLMD_HOST", raising=False)


def client_for(server: FakeKfp, **options) -> kfp.Client:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=server.url, **options)


def test_a_run_s_tasks_and_outputs_are_read_with_ml_metadata_s_own_messages():
    with FakeKfp() as server:
        context = server.metadata.record_run("run-1", "pipeline", "minio://b/root")
        metadata = {"accuracy": 0.9, "test_samples": 359, "promote": True, "classes": ["a", "b"], "lineage": {"x": 1}}
        outputs = {
            "metrics": RecordedOutput("minio://b/root/pipeline/run-1/evaluate/s/metrics", "system.Metrics", metadata),
            "confusion": RecordedOutput("minio://b/root/pipeline/run-1/evaluate/s/confusion"),
        }
        computed = server.metadata.record_task(context, "evaluate", outputs)
        later = server.metadata.record_run("run-2", "pipeline", "minio://b/root")
        server.metadata.record_cached_task(later, "evaluate", computed)
        server.metadata.record_failed_task(later, "train")
        store = for_client(client_for(server))
        [first] = recorded_tasks(store, "run-1", lambda name: name == "evaluate")
        assert (first.state, first.cached_from, sorted(first.outputs)) == ("COMPLETE", None, ["confusion", "metrics"])
        artifact = first.output("metrics")
        assert artifact.uri == "minio://b/root/pipeline/run-1/evaluate/s/metrics"
        # As KFP's launcher records metadata: numbers as doubles, a bool as 1, a list and an object in a Struct.
        assert artifact.metadata == {
            "accuracy": 0.9,
            "classes": {"list": ["a", "b"]},
            "display_name": "metrics",
            "lineage": {"struct": {"x": 1.0}},
            "promote": 1,
            "store_session_info": '{"Provider":"minio","Params":{}}',
            "test_samples": 359.0,
        }
        cached, failed = recorded_tasks(store, "run-2", lambda name: True)
        assert (cached.task, cached.state, cached.cached_from) == ("evaluate", "CACHED", computed)
        assert cached.output("metrics") == artifact  # this run's record of it: the first run's artifact
        assert (failed.task, failed.state, failed.outputs) == ("train", "FAILED", {})
        with pytest.raises(LookupError, match=r"run run-2 has no finished task 'train' \(recorded: train FAILED\)"):
            task_output(store, "run-2", "train", "model")
        with pytest.raises(LookupError, match=r"has no output 'model' recorded; its outputs: confusion, metrics"):
            cached.output("model")
    assert server.violations == []  # every request parsed as ML Metadata's own message, nothing unknown in it
    assert [method for method, _ in server.metadata.calls][:4] == [
        "GetContextByTypeAndName",
        "GetExecutionsByContext",
        "GetEventsByExecutionIDs",
        "GetArtifactsByID",
    ]


def test_a_field_ml_metadata_does_not_declare_is_refused_by_the_fake():
    """The fake reads with the real messages: a request encoded with a wrong field number or type fails there."""
    with FakeKfp() as server:
        store = for_client(client_for(server))
        wrong = MESSAGES["GetContextByTypeAndNameRequest"](type_version="v")  # field 3: a bool in GetArtifactsByID
        with pytest.raises(MetadataStoreError, match=r"refused GetArtifactsByID: INVALID_ARGUMENT: unknown fields"):
            store.call("GetArtifactsByID", wrong)
    assert server.violations == ["GetArtifactsByID: fields ['3'] are not in ml_metadata.GetArtifactsByIDRequest"]


def test_the_calls_carry_the_kfp_clients_token_read_afresh(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("first-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with FakeKfp(token="first-token") as server:
        server.metadata.record_run("run-1", "pipeline", "minio://b/root")
        store = for_client(client_for(server, credentials=ServiceAccountTokenVolumeCredentials()))
        assert store.run_context("run-1").name == "run-1"
        token.write_text("rotated-token")  # the Kubeflow ServiceAccount token rotates; the next call reads it
        with pytest.raises(MetadataStoreError, match=r"answered HTTP 403: give a token") as refused:
            store.run_context("run-1")
        assert "rotated-token" not in str(refused.value)
        server.token = "rotated-token"
        assert store.run_context("run-1").name == "run-1"
        assert store.run_context("no-such-run") is None  # ML Metadata answers an empty message
    assert server.violations == []


def _plain_server(status: int):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_address_that_serves_no_ml_metadata_is_told_where_it_is():
    server = _plain_server(404)  # the KFP API server itself (ml-pipeline:8888) proxies no /ml_metadata
    try:
        store = MetadataStore(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(
            MetadataStoreError, match=rf"HTTP 404: this address serves no ML Metadata.*{IN_CLUSTER_ENVOY}"
        ):
            store.run_context("run-1")
    finally:
        server.shutdown()
    with pytest.raises(MetadataStoreError, match=r"cannot reach ML Metadata at http://127.0.0.1:9 \("):
        MetadataStore("http://127.0.0.1:9", timeout=2).run_context("run-1")


@pytest.mark.parametrize(
    "host, override, address",
    [
        ("http://127.0.0.1:8080", None, "http://127.0.0.1:8080"),
        ("https://kubeflow.example.com/pipeline", None, "https://kubeflow.example.com"),  # the UI's origin root
        ("http://ml-pipeline.kubeflow.svc.cluster.local:8888", IN_CLUSTER_ENVOY, IN_CLUSTER_ENVOY),
        ("http://127.0.0.1:8080", "metadata-envoy-service:9090/", "http://metadata-envoy-service:9090"),
    ],
)
def test_ml_metadata_is_at_the_origin_of_the_kfp_host_unless_told(host, override, address):
    assert metadata_address(host, override) == address


def test_an_address_with_credentials_is_refused():
    with pytest.raises(MetadataStoreError, match=re.escape("without credentials, got 'http://u:p@mlmd:9090'")):
        metadata_address("http://127.0.0.1:8080", "http://u:p@mlmd:9090")
