"""kfp.Client itself against tests/support/fake_kfp.py: the fake takes what the real API server takes.

kfp.Client sends filters with numeric operations and camelCase fields, int64 fields as JSON numbers,
multipart uploads; the real server (grpc-gateway with protojson) accepts all of it, so the fake must too,
while still refusing what the real server refuses.
"""

import json
from pathlib import Path

import kfp
import pytest
import requests
import yaml
from kfp import compiler, dsl
from kfp.client import ServiceAccountTokenVolumeCredentials
from kfp_server_api.exceptions import ApiException

from tests.support.fake_kfp import FakeKfp

API = "/apis/v2beta1"


# No `from __future__ import annotations` in this file: KFP reads the component's annotations as types.
@dsl.component(base_image="python:3.11-slim")
def greet(name: str) -> str:
    return f"hello {name}"


@dsl.pipeline(name="greeting")
def greeting(name: str = "world"):
    greet(name=name)


@pytest.fixture(autouse=True)
def no_local_kfp_context(monkeypatch, tmp_path):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))


@pytest.fixture
def package(tmp_path) -> Path:
    path = tmp_path / "greeting.yaml"
    compiler.Compiler().compile(greeting, str(path))
    return path


@pytest.fixture
def fake():
    with FakeKfp() as server:
        yield server
    assert server.violations == [], "kfp.Client sent something the fake (and so the real server) refuses"


def client_for(server: FakeKfp, **options) -> kfp.Client:
    with pytest.warns(FutureWarning):  # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
        return kfp.Client(host=server.url, **options)


def sent(server: FakeKfp, method: str, path: str) -> list[dict]:
    return [r for r in server.requests if r["method"] == method and r["path"] == API + path]


def test_kfp_client_uploads_runs_waits_and_schedules(fake, package):
    client = client_for(fake)
    assert sent(fake, "GET", "/healthz")  # kfp.Client asks at construction when it has no namespace

    pipeline = client.upload_pipeline(str(package), "greeting")
    version = client.upload_pipeline_version(str(package), "v2", pipeline_name="greeting")
    assert client.get_pipeline_id("greeting") == pipeline.pipeline_id == version.pipeline_id
    assert [v.name for v in client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions] == ["greeting", "v2"]
    (lookup, *_) = [r for r in sent(fake, "GET", "/pipelines") if "filter" in r["query"]]
    assert json.loads(lookup["query"]["filter"][0])["predicates"][0]["operation"] == 1  # as kfp.Client sends it

    result = client.create_run_from_pipeline_package(
        str(package), arguments={"name": "kubeflow"}, experiment_name="demo"
    )
    run = client.wait_for_run_completion(result.run_id, timeout=60, sleep_duration=0)
    assert run.state == "SUCCEEDED" and run.runtime_config.parameters == {"name": "kubeflow"}
    # The Argo nodes KFP 2.17 reports for a container task: its driver, its own node, its executor pod.
    assert [task.display_name for task in run.run_details.task_details] == ["greet-driver", "greet", "executor"]
    experiment = client.get_experiment(experiment_id=run.experiment_id)
    assert experiment.display_name == "demo"
    from_function = client.create_run_from_pipeline_func(greeting, experiment_name="demo")
    assert client.get_run(from_function.run_id).experiment_id == experiment.experiment_id

    nightly = client.create_recurring_run(
        experiment.experiment_id,
        "nightly",
        cron_expression="0 0 3 * * *",
        start_time="2030-06-01T05:00:00+02:00",
        max_concurrency=2,
        pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id,
    )
    hourly = client.create_recurring_run(
        experiment.experiment_id, "hourly", interval_second=3600, pipeline_package_path=str(package), enabled=False
    )
    assert (nightly.status, hourly.status) == ("ENABLED", "DISABLED")
    body = sent(fake, "POST", "/recurringruns")[1]["body"]
    assert body["max_concurrency"] == "1" and body["trigger"] == {"periodic_schedule": {"interval_second": "3600"}}
    assert fake.recurring_runs[nightly.recurring_run_id]["max_concurrency"] == "2"
    assert len(client.list_recurring_runs(experiment_id=experiment.experiment_id).recurring_runs) == 2

    assert client.list_runs(experiment_id=experiment.experiment_id).total_size == 2
    assert client.terminate_run(run.run_id) == {}
    client.delete_recurring_run(hourly.recurring_run_id)
    assert list(fake.recurring_runs) == [nightly.recurring_run_id]


def test_kfp_client_with_a_service_account_token_and_a_namespace(package, tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with FakeKfp(token="projected-token", namespaces=("team-a",)) as server:
        client = client_for(server, namespace="team-a", credentials=ServiceAccountTokenVolumeCredentials())
        result = client.create_run_from_pipeline_package(str(package), experiment_name="team")
        assert client.wait_for_run_completion(result.run_id, 60, sleep_duration=0).state == "SUCCEEDED"
        with pytest.raises(ApiException) as refused:
            client.create_experiment("elsewhere", namespace="team-b")
    assert refused.value.status == 403
    assert [e["namespace"] for e in server.experiments.values()] == ["team-a"]
    assert not sent(server, "GET", "/healthz")  # a namespace was given
    assert server.violations == []


# -- forms the real server reads (protojson), sent by hand -----------------------------------------
def post(server: FakeKfp, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + API + path, json=body, timeout=10)


def test_camel_case_numeric_enums_int64_numbers_and_timestamps_are_read(fake, package):
    experiment = post(fake, "/experiments", {"displayName": "forms", "description": None}).json()
    assert experiment["display_name"] == "forms" and "description" not in experiment
    spec = yaml.safe_load(package.read_text())
    answer = post(
        fake,
        "/recurringruns",
        {
            "displayName": "every 90 minutes",
            "experimentId": experiment["experiment_id"],
            "pipelineSpec": spec,
            "runtimeConfig": {"parameters": {"name": "camel"}},
            "maxConcurrency": 3,
            "noCatchup": True,
            "mode": 2,
            "trigger": {
                "periodicSchedule": {
                    "intervalSecond": 5400.0,
                    "startTime": "2030-06-01T03:00:00.123456789+02:00",
                    "end_time": "2030-07-01T00:00:00Z",
                }
            },
        },
    )
    assert answer.status_code == 200, answer.text
    stored = fake.recurring_runs[answer.json()["recurring_run_id"]]
    assert stored["max_concurrency"] == "3" and stored["mode"] == "DISABLE" and stored["status"] == "DISABLED"
    assert stored["trigger"]["periodic_schedule"]["interval_second"] == "5400"
    assert stored["runtime_config"] == {"parameters": {"name": "camel"}}  # map keys stay as they are

    page = requests.get(
        fake.url + API + "/experiments",
        params={"pageSize": "1", "filter": json.dumps({"predicates": [{"op": 1}]})},
        timeout=10,
    )
    assert page.status_code == 400 and 'unknown field "op"' in page.json()["message"]
    fake.violations.clear()
    found = requests.get(
        fake.url + API + "/experiments",
        params={
            "pageSize": "1",
            "filter": json.dumps(
                {"predicates": [{"operation": "IS_SUBSTRING", "key": "display_name", "stringValue": "orm"}]}
            ),
        },
        timeout=10,
    ).json()
    assert [e["display_name"] for e in found["experiments"]] == ["forms"]


def test_answers_leave_out_empty_fields_as_the_real_server_does(fake):
    assert requests.get(fake.url + API + "/runs", timeout=10).json() == {}
    assert requests.get(fake.url + API + "/healthz", timeout=10).json() == {"pipeline_store": "database"}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"display_name": "x", "max_concurrency": 1.5}, "body.max_concurrency: 1.5 is not an int64"),
        ({"display_name": "x", "max_concurrency": "9223372036854775808"}, "is not an int64"),
        ({"display_name": "x", "mode": "ON"}, 'body.mode: "ON" is not a RecurringRunMode value'),
        ({"display_name": "x", "mode": 7}, "body.mode: 7 is not a RecurringRunMode value"),
        ({"display_name": "x", "no_catchup": "true"}, 'body.no_catchup: "true" is not true or false'),
        (
            {"display_name": "x", "trigger": {"cronSchedule": {"startTime": "2030-06-01T03:00:00"}}},
            "body.trigger.cron_schedule.start_time: "
            '"2030-06-01T03:00:00" is not an RFC 3339 timestamp such as 2025-06-01T03:00:00Z',
        ),
        ({"display_name": "x", "trigger": {"cron": "* * * * * *"}}, 'unknown field "cron" in v2beta1Trigger'),
    ],
)
def test_what_protojson_refuses_is_refused(body, complaint):
    with FakeKfp() as server:
        answer = post(server, "/recurringruns", body)
    assert answer.status_code == 400 and answer.json()["code"] == 3
    assert complaint in answer.json()["message"]
    assert len(server.violations) == 1
