"""The kfp-torch command line against a KFP API server that checks every request against the real spec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kfp
import pytest
import yaml

from components.common.processes import free_port
from pipelines import kfp_client
from pipelines.cli import main
from pipelines.compile import compile_all
from tests.support.fake_kfp import FakeKfp

TOKEN = "kfp-test-token-7f3a9c"  # must never show up in any output
REPO = "https://github.com/example/data.git"
KFP_ENV = ("KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "KFP_TOKEN_FILE", "KF_PIPELINES_SA_TOKEN_PATH")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def training_yaml(compiled) -> Path:
    compile_all(compiled)
    return compiled / "training_pipeline.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in KFP_ENV:
        monkeypatch.delenv(name, raising=False)
    # Never pick up a real ServiceAccount token, kfp context or pod namespace from this machine.
    monkeypatch.setattr(kfp_client, "DEFAULT_SA_TOKEN_PATH", str(tmp_path / "no-such-token"))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-kfp-config" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))


@pytest.fixture
def fake(monkeypatch):
    with FakeKfp() as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        yield server
    assert server.violations == [], "requests or answers that break the KFP API spec"


@pytest.fixture
def secured(monkeypatch):
    """A multi-user KFP: a bearer token, authorized for namespace team-a only."""
    with FakeKfp(token=TOKEN, namespaces=("team-a",)) as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        monkeypatch.setenv("KFP_NAMESPACE", "team-a")
        yield server
    assert server.violations == []


def changed_copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes() + b"\n# rebuilt\n")
    return target


def posts(server: FakeKfp, path: str) -> list[dict]:
    return [r for r in server.requests if r["method"] == "POST" and r["path"] == "/apis/v2beta1" + path]


# -- compile ------------------------------------------------------------------------------------
def compile_argv(folder: Path) -> list[str]:
    """`kfp-torch compile` into ``folder``, its component specs beside it (not into the repository's build/)."""
    components = folder.parent / f"{folder.name}-components"
    return ["compile", "--output-dir", str(folder), "--components-dir", str(components)]


def test_compile_twice_is_byte_identical(tmp_path, capsys):
    assert main(compile_argv(tmp_path / "a")) == 0
    assert main(compile_argv(tmp_path / "b")) == 0
    first = sorted((tmp_path / "a").glob("*.yaml"))
    assert [p.name for p in first] == [
        "distributed_training_pipeline.yaml",
        "promote_pipeline.yaml",
        "training_pipeline.yaml",
    ]
    for path in first:
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
    assert str(tmp_path / "a" / "training_pipeline.yaml") in capsys.readouterr().out


def test_compile_with_a_bad_settings_file_is_bad_input(tmp_path, capsys):
    assert main([*compile_argv(tmp_path / "out"), "--settings", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


# -- upload -------------------------------------------------------------------------------------
def test_upload_is_idempotent_and_a_change_makes_a_new_version(fake, training_yaml, tmp_path, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    out = capsys.readouterr().out
    assert "created pipeline pytorch-training" in out and "uploaded version pytorch-training-" in out
    assert main(["upload", str(training_yaml)]) == 0
    assert "exists already; nothing uploaded" in capsys.readouterr().out
    assert len(fake.pipelines) == 1 and len(fake.versions) == 1
    assert len(posts(fake, "/pipelines/upload_version")) == 1

    assert main(["upload", str(changed_copy(training_yaml, tmp_path / "training_pipeline.yaml"))]) == 0
    assert "uploaded version" in capsys.readouterr().out
    names = sorted(v["name"] for v in fake.versions.values())
    assert len(names) == 2 and len(fake.pipelines) == 1
    assert all(name.startswith("pytorch-training-") and len(name) == len("pytorch-training-") + 12 for name in names)
    # The version holds what was uploaded: pipeline spec plus platform spec.
    version = next(iter(fake.versions.values()))
    assert version["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "pytorch-training"


def test_a_failed_first_version_upload_leaves_no_empty_pipeline(fake, training_yaml, capsys):
    fake.fail_uploads = True
    assert main(["upload", str(training_yaml)]) == 1
    err = capsys.readouterr().err
    assert "HTTP 500: Failed to create a pipeline version" in err
    assert "the pipeline 'pytorch-training', created for this upload, was deleted again" in err
    assert fake.pipelines == {} and fake.versions == {}
    fake.fail_uploads = False
    assert main(["upload", str(training_yaml)]) == 0  # and a retry starts clean
    assert len(fake.pipelines) == 1 and len(fake.versions) == 1


def test_upload_rejects_a_file_that_is_not_a_pipeline(fake, tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    path.write_text("just: a mapping\n")
    assert main(["upload", str(path)]) == 2
    assert "not a compiled KFP pipeline" in capsys.readouterr().err
    assert fake.requests == []


# -- run ----------------------------------------------------------------------------------------
def test_run_from_file_sends_typed_parameters_and_the_spec_as_kfp_client_does(fake, training_yaml, capsys):
    from kfp.client.client import _extract_pipeline_yaml

    argv = ["run", str(training_yaml), "--param", f"repo_url={REPO}", "--param", "epochs=3"]
    argv += ["--param", "learning_rate=0.01", "--param", "build_image=false"]
    argv += ["--param", 'dvc_remote_config={"endpointurl": "https://s3.example.com"}', "--experiment", "nightly"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    (request,) = posts(fake, "/runs")
    body = request["body"]
    assert body["runtime_config"]["parameters"] == {
        "repo_url": REPO,
        "epochs": 3,
        "learning_rate": 0.01,
        "build_image": False,
        "dvc_remote_config": {"endpointurl": "https://s3.example.com"},
    }
    assert isinstance(body["runtime_config"]["parameters"]["epochs"], int)
    # A two-document YAML (pipeline spec + platform spec) goes as kfp.Client sends it.
    assert set(body["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}
    assert body["pipeline_spec"] == _extract_pipeline_yaml(str(training_yaml)).to_dict()
    experiment = fake.experiments[body["experiment_id"]]
    assert experiment["display_name"] == "nightly"
    assert f"run {body and next(iter(fake.runs))} started" in out


def test_single_document_yaml_sends_the_bare_pipeline_spec(fake, training_yaml, tmp_path, capsys):
    first = next(yaml.safe_load_all(training_yaml.read_text()))
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(first))
    assert main(["run", str(single), "--param", f"repo_url={REPO}"]) == 0
    (request,) = posts(fake, "/runs")
    assert request["body"]["pipeline_spec"]["pipelineInfo"]["name"] == "pytorch-training"


def test_runs_reuse_the_experiment(fake, training_yaml, capsys):
    for _ in range(2):
        assert main(["run", str(training_yaml), "--param", f"repo_url={REPO}"]) == 0
    assert [e["display_name"] for e in fake.experiments.values()] == ["Default"]
    assert len(fake.runs) == 2


def test_wait_follows_the_run_and_exits_0_on_success(fake, training_yaml, capsys):
    argv = ["run", str(training_yaml), "--param", f"repo_url={REPO}", "--wait", "--poll-interval", "0"]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run ") and "started" not in line]
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_wait_exits_non_zero_with_the_runs_error_on_failure(fake, training_yaml, capsys):
    fake.outcome = "FAILED"
    argv = ["run", str(training_yaml), "--param", f"repo_url={REPO}", "--wait", "--poll-interval", "0"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.rstrip().endswith("FAILED")
    assert "ended FAILED" in captured.err and "task train failed" in captured.err
    assert "CUDA out of memory" in captured.err


def task_caching(spec: dict) -> dict[str, bool]:
    """Each task's enableCache, in the root DAG and in every sub-DAG (dsl.If), by DAG/task."""
    dags = {"root": spec["root"]["dag"]}
    dags |= {name: component["dag"] for name, component in spec["components"].items() if "dag" in component}
    return {
        f"{dag_name}/{task_name}": task.get("cachingOptions", {}).get("enableCache", False)
        for dag_name, dag in dags.items()
        for task_name, task in dag["tasks"].items()
    }


def test_no_cache_turns_caching_off_for_every_task_even_inside_conditions(fake, training_yaml, capsys):
    compiled = next(yaml.safe_load_all(training_yaml.read_text()))
    cached = task_caching(compiled)
    assert any(cached[name] for name in cached if not name.startswith("root/")), "a sub-DAG task caches"
    assert main(["run", str(training_yaml), "--param", f"repo_url={REPO}", "--no-cache"]) == 0
    (request,) = posts(fake, "/runs")
    sent = request["body"]["pipeline_spec"]["pipeline_spec"]
    assert task_caching(sent).keys() == cached.keys()
    assert not any(task_caching(sent).values())
    assert request["body"]["pipeline_spec"]["platform_spec"]  # the Kubernetes settings go along
    assert "caching off" in capsys.readouterr().out


def test_no_cache_with_an_uploaded_pipeline_sends_that_versions_spec(fake, training_yaml, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    (version,) = fake.versions.values()
    assert main(["run", "--pipeline", "pytorch-training", "--param", f"repo_url={REPO}", "--no-cache"]) == 0
    (request,) = posts(fake, "/runs")
    assert "pipeline_version_reference" not in request["body"]
    sent = request["body"]["pipeline_spec"]["pipeline_spec"]
    assert sent["pipelineInfo"] == version["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]
    assert not any(task_caching(sent).values())


def test_without_no_cache_the_compiled_caching_stays(fake, training_yaml, capsys):
    assert main(["run", str(training_yaml), "--param", f"repo_url={REPO}"]) == 0
    (request,) = posts(fake, "/runs")
    compiled = next(yaml.safe_load_all(training_yaml.read_text()))
    assert task_caching(request["body"]["pipeline_spec"]["pipeline_spec"]) == task_caching(compiled)


def test_runs_list_get_and_terminate(fake, training_yaml, capsys):
    fake.run_progress = ("PENDING",) + ("RUNNING",) * 20
    for experiment in ("nightly", "nightly", "adhoc"):
        assert main(["run", str(training_yaml), "--param", f"repo_url={REPO}", "--experiment", experiment]) == 0
    first, second, third = fake.runs
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [third, second, first]  # newest first
    assert main(["runs", "list", "--experiment", "nightly", "--limit", "1"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [second]

    assert main(["runs", "terminate", first]) == 0
    assert f"run {first}: CANCELING (terminate requested)" in capsys.readouterr().out
    assert posts(fake, f"/runs/{first}:terminate")
    assert main(["runs", "get", first]) == 0
    report = capsys.readouterr().out
    assert f"run {first}" in report and "state       CANCELED" in report
    assert f"parameter   repo_url = '{REPO}'" in report

    fake.runs[second]["state"] = "SUCCEEDED"
    fake._run_plans[second] = []
    assert main(["runs", "terminate", second]) == 0
    assert "had ended SUCCEEDED already; nothing to terminate" in capsys.readouterr().out
    assert not posts(fake, f"/runs/{second}:terminate")


def test_runs_of_an_unknown_experiment_or_run(fake, capsys):
    assert main(["runs", "list", "--experiment", "nope"]) == 1
    assert "no experiment named 'nope'" in capsys.readouterr().err
    assert main(["runs", "get", "no-such-run"]) == 1
    assert "HTTP 404: run no-such-run not found" in capsys.readouterr().err
    assert main(["runs", "list", "--limit", "0"]) == 2
    assert "--limit 0 must be 1 or more" in capsys.readouterr().err


def test_run_by_pipeline_name_uses_the_latest_version_or_a_pinned_one(fake, training_yaml, tmp_path, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    assert main(["upload", str(changed_copy(training_yaml, tmp_path / "training_pipeline.yaml"))]) == 0
    first, second = sorted(fake.versions.values(), key=lambda v: v["created_at"])
    assert main(["run", "--pipeline", "pytorch-training", "--param", f"repo_url={REPO}", "--param", "seed=7"]) == 0
    argv = ["run", "--pipeline", "pytorch-training", "--version", first["name"], "--param", f"repo_url={REPO}"]
    assert main(argv) == 0
    latest, pinned = (r["body"] for r in posts(fake, "/runs"))
    assert latest["pipeline_version_reference"] == {
        "pipeline_id": second["pipeline_id"],
        "pipeline_version_id": second["pipeline_version_id"],
    }
    assert "pipeline_spec" not in latest
    assert latest["runtime_config"]["parameters"] == {"repo_url": REPO, "seed": 7}
    assert pinned["pipeline_version_reference"]["pipeline_version_id"] == first["pipeline_version_id"]
    assert f"version {second['name']}" in capsys.readouterr().out


def test_unknown_version_lists_the_versions(fake, training_yaml, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    argv = ["run", "--pipeline", "pytorch-training", "--version", "v9", "--param", f"repo_url={REPO}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no version 'v9'" in err and "pytorch-training-" in err


def test_unknown_pipeline_name_lists_close_names(fake, training_yaml, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    assert main(["run", "--pipeline", "pytorch-trainig", "--param", f"repo_url={REPO}"]) == 1
    assert "no pipeline named 'pytorch-trainig'; did you mean pytorch-training?" in capsys.readouterr().err
    assert main(["run", "--pipeline", "resnet", "--param", f"repo_url={REPO}"]) == 1
    assert "existing pipelines: pytorch-training" in capsys.readouterr().err
    assert posts(fake, "/runs") == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([f"repo_url={REPO}", "learnig_rate=0.1"], "unknown parameter 'learnig_rate': pytorch-training takes"),
        ([f"repo_url={REPO}", "epochs=three"], "parameter epochs is NUMBER_INTEGER: 'three' is not a whole number"),
        ([f"repo_url={REPO}", "epochs=2.5"], "'2.5' is not a whole number"),
        ([f"repo_url={REPO}", "build_image=yes"], "parameter build_image is BOOLEAN: 'yes' is not true or false"),
        ([f"repo_url={REPO}", "dvc_remote_config=[1]"], "dvc_remote_config is STRUCT"),
        ([f"repo_url={REPO}", "learning_rate=nan"], "it must be finite"),
        ([f"repo_url={REPO}", "epochs=0"], "epochs must be an integer >= 1, got 0"),
        ([f"repo_url={REPO}", "accuracy_threshold=1.5"], "accuracy_threshold must be a number in [0, 1], got 1.5"),
        ([f"repo_url={REPO}", "architecture=resnet9"], "architecture must be one of small_cnn, resnet18,"),
        ([f"repo_url={REPO}", "model_factory=my models"], "model_factory must look like 'package.module:function'"),
        ([f"repo_url={REPO}", "image_size=0"], "image_size must be an integer >= 1 or -1 for automatic, got 0"),
        ([f"repo_url={REPO}", "lr_schedule=linear"], "lr_schedule must be one of constant, cosine"),
        (["epochs=3"], "pytorch-training needs repo_url: pass --param repo_url=..."),
        ([f"repo_url={REPO}", "epochs"], "--param 'epochs' is not key=value"),
        ([f"repo_url={REPO}", "epochs=1", "epochs=2"], "parameter epochs is given twice"),
    ],
)
def test_bad_parameters_fail_before_any_request(fake, training_yaml, capsys, params, message):
    argv = ["run", str(training_yaml)]
    for param in params:
        argv += ["--param", param]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_distributed_pipeline_checks_its_own_settings(fake, compiled, training_yaml, capsys):
    path = compiled / "distributed_training_pipeline.yaml"
    argv = ["run", str(path), "--param", f"repo_url={REPO}", "--param", "tolerations=[1]"]
    assert main(argv + ["--param", "launcher=slurm"]) == 2
    assert "launcher must be one of" in capsys.readouterr().err
    assert main(argv[:4] + ["--param", "num_workers=0"]) == 2
    assert "num_workers" in capsys.readouterr().err
    assert main(argv[:4] + ["--param", 'command=["python", ""]']) == 2
    assert "command must be a list of non-empty strings" in capsys.readouterr().err
    assert fake.requests == []


# -- schedule -----------------------------------------------------------------------------------
def recurring_bodies(server: FakeKfp) -> list[dict]:
    return [r["body"] for r in posts(server, "/recurringruns")]


def test_schedule_create_with_cron_pins_the_version_and_skips_catch_up(fake, training_yaml, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    (version,) = fake.versions.values()
    argv = ["schedule", "create", "--pipeline", "pytorch-training", "--name", "nightly", "--cron", "0 3 * * *"]
    assert main(argv + ["--param", f"repo_url={REPO}"]) == 0
    (body,) = recurring_bodies(fake)
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["max_concurrency"] == "1" and body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert body["runtime_config"]["parameters"] == {"repo_url": REPO}
    out = capsys.readouterr().out
    assert "ENABLED" in out and "cron 0 0 3 * * *" in out and "no catch-up" in out


def test_schedule_create_with_interval_latest_version_concurrency_and_catch_up(fake, training_yaml, capsys):
    assert main(["upload", str(training_yaml)]) == 0
    argv = ["schedule", "create", "--pipeline", "pytorch-training", "--name", "every 6h", "--interval", "6h"]
    argv += ["--max-concurrency", "3", "--catchup", "--always-latest", "--param", f"repo_url={REPO}"]
    assert main(argv) == 0
    (body,) = recurring_bodies(fake)
    assert body["trigger"] == {"periodic_schedule": {"interval_second": "21600"}}
    assert body["max_concurrency"] == "3" and body["no_catchup"] is False
    # "If unset, the latest pipeline version is used."
    assert body["pipeline_version_reference"] == {"pipeline_id": next(iter(fake.pipelines))}
    assert "latest version" in capsys.readouterr().out


def test_schedule_from_a_file_and_disabled(fake, training_yaml, capsys):
    argv = ["schedule", "create", str(training_yaml), "--name", "weekly", "--cron", "0 0 6 * * SUN", "--disabled"]
    assert main(argv + ["--param", f"repo_url={REPO}"]) == 0
    (body,) = recurring_bodies(fake)
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * SUN" and body["mode"] == "DISABLE"
    assert "pipeline_spec" in body and "pipeline_version_reference" not in body


def test_schedule_window_is_sent_in_utc(fake, training_yaml, capsys):
    argv = ["schedule", "create", str(training_yaml), "--name", "summer", "--interval", "1d"]
    argv += ["--start-time", "2030-06-01T05:00:00+02:00", "--end-time", "2030-09-01", "--param", f"repo_url={REPO}"]
    assert main(argv) == 0
    (body,) = recurring_bodies(fake)
    assert body["trigger"] == {
        "periodic_schedule": {
            "interval_second": "86400",
            "start_time": "2030-06-01T03:00:00Z",
            "end_time": "2030-09-01T00:00:00Z",
        }
    }
    assert "every 86400s from 2030-06-01T03:00:00Z until 2030-09-01T00:00:00Z" in capsys.readouterr().out


def test_schedule_enable_disable_delete_and_list(fake, training_yaml, capsys):
    argv = ["schedule", "create", str(training_yaml), "--name", "hourly", "--interval", "1h"]
    assert main(argv + ["--param", f"repo_url={REPO}"]) == 0
    (recurring_id,) = fake.recurring_runs
    assert main(["schedule", "disable", recurring_id]) == 0
    assert fake.recurring_runs[recurring_id]["status"] == "DISABLED"
    assert main(["schedule", "list"]) == 0
    assert f"{recurring_id}  DISABLED" in capsys.readouterr().out
    assert main(["schedule", "enable", recurring_id]) == 0
    assert fake.recurring_runs[recurring_id]["status"] == "ENABLED"
    assert main(["schedule", "delete", recurring_id]) == 0
    assert fake.recurring_runs == {}
    capsys.readouterr()
    assert main(["schedule", "list"]) == 0
    assert "no recurring runs" in capsys.readouterr().out
    assert main(["schedule", "delete", recurring_id]) == 1
    assert "HTTP 404" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cron", "0 25 * * *"], "hour 25 is out of range; valid values are 0-23"),
        (["--cron", "0 3 * *"], "has 4 field(s)"),
        (["--interval", "soon"], "interval 'soon' is not a duration"),
        (["--cron", "0 3 * * *", "--max-concurrency", "0"], "max concurrency 0 is out of range; KFP accepts 1-10"),
        (["--cron", "0 3 * * *", "--always-latest"], "--always-latest needs --pipeline NAME"),
        (["--cron", "0 3 * * *", "--start-time", "2030-06-01 03:00"], "--start-time '2030-06-01 03:00' is not an RFC"),
        (["--cron", "0 3 * * *", "--end-time", "next week"], "--end-time 'next week' is not an RFC 3339 time"),
        (
            ["--cron", "0 3 * * *", "--start-time", "2030-06-01", "--end-time", "2030-05-01"],
            "--end-time 2030-05-01T00:00:00Z is not after --start-time 2030-06-01T00:00:00Z",
        ),
        (["--interval", "1h", "--end-time", "2001-01-01T00:00:00Z"], "has passed: the schedule would never start"),
    ],
)
def test_bad_schedules_fail_before_any_request(fake, training_yaml, capsys, options, message):
    argv = ["schedule", "create", str(training_yaml), "--name", "x", *options, "--param", f"repo_url={REPO}"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


# -- connection and credentials -----------------------------------------------------------------
def test_unreachable_host_says_what_was_tried_and_how_to_port_forward(training_yaml, capsys):
    host = f"http://127.0.0.1:{free_port()}"
    assert main(["upload", str(training_yaml), "--host", host]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the KFP API at {host} (from --host" in err
    assert "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80" in err


def test_a_host_that_is_not_a_url(training_yaml, capsys):
    assert main(["upload", str(training_yaml), "--host", "ftp://kfp.example.com"]) == 1
    assert "host 'ftp://kfp.example.com' is not an http(s) URL" in capsys.readouterr().err


def test_connection_options_before_the_command_and_from_the_environment(fake, training_yaml, monkeypatch, capsys):
    monkeypatch.setenv("KFP_HOST", "http://127.0.0.1:1")  # the flag wins over the environment
    assert main(["--host", fake.url, "upload", str(training_yaml)]) == 0
    assert len(fake.versions) == 1


def test_a_token_from_the_environment_with_a_namespace(secured, training_yaml, monkeypatch, capsys):
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    assert main(["upload", str(training_yaml)]) == 0
    assert (
        main(["run", "--pipeline", "pytorch-training", "--param", f"repo_url={REPO}", "--wait", "--poll-interval", "0"])
        == 0
    )
    (pipeline,) = secured.pipelines.values()
    assert pipeline["namespace"] == "team-a"
    assert [e["namespace"] for e in secured.experiments.values()] == ["team-a"]
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + "\n".join(secured.log)


def test_token_file_is_used_and_never_printed(secured, training_yaml, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert main(["upload", str(training_yaml), "--token-file", str(token_file)]) == 0
    assert main(["schedule", "list", "--token-file", str(token_file)]) == 0
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_service_account_token_path(secured, training_yaml, tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "sa-token"
    token_file.write_text(TOKEN)
    monkeypatch.setattr(kfp_client, "DEFAULT_SA_TOKEN_PATH", str(token_file))
    assert main(["upload", str(training_yaml)]) == 0
    assert len(secured.versions) == 1


def test_missing_token_is_401_with_where_to_put_one(secured, training_yaml, capsys):
    assert main(["upload", str(training_yaml)]) == 1
    err = capsys.readouterr().err
    assert "needs a token (HTTP 401)" in err and "KFP_TOKEN_FILE" in err


def test_wrong_token_is_rejected_without_printing_it(secured, training_yaml, tmp_path, capsys):
    wrong = "wrong-token-0d1e2f"
    token_file = tmp_path / "token"
    token_file.write_text(wrong)
    assert main(["upload", str(training_yaml), "--token-file", str(token_file)]) == 1
    err = capsys.readouterr().err
    assert f"the token file {token_file} (--token-file) is not authorized" in err and "HTTP 403" in err
    assert wrong not in err


def test_wrong_namespace_is_403_naming_the_namespace(secured, training_yaml, monkeypatch, capsys):
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    assert main(["upload", str(training_yaml), "--namespace", "team-b"]) == 1
    err = capsys.readouterr().err
    assert "the token in KFP_TOKEN is not authorized for namespace 'team-b' (HTTP 403" in err
    assert TOKEN not in err


def test_empty_token_file_names_the_file(secured, training_yaml, tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "empty"
    token_file.write_text("\n")
    monkeypatch.setenv("KFP_TOKEN_FILE", str(token_file))
    assert main(["upload", str(training_yaml)]) == 1
    assert f"the token file {token_file} (KFP_TOKEN_FILE) is empty" in capsys.readouterr().err
    assert secured.requests == []


@pytest.fixture
def echoing_proxy(monkeypatch):
    """A misbehaving proxy in front of KFP: every answer is an error whose body quotes the request's
    Authorization header. ``answer`` holds the status and whether the body is JSON or plain text."""
    import http.server
    import json
    import threading

    answer = {"status": 502, "json": True, "padding": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _echo(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            quoted = f"upstream refused {self.command} {self.path} with Authorization: {self.headers['Authorization']}"
            quoted = quoted.rjust(answer["padding"] + len(quoted) - quoted.index("Bearer") - len("Bearer "), ".")
            text = json.dumps({"error": quoted, "message": quoted}) if answer["json"] else quoted
            body = text.encode()
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json" if answer["json"] else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _echo

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    yield answer
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [401, 403, 404, 500, 502])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_a_token_echoed_in_an_error_body_is_never_printed(echoing_proxy, training_yaml, capsys, status, as_json):
    echoing_proxy.update(status=status, json=as_json)
    assert main(["upload", str(training_yaml)]) == 1
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert "upstream refused" in captured.err and "Authorization: Bearer ***" in captured.err  # the rest is kept


def test_a_token_cut_by_the_shortened_error_body_is_not_printed_in_part(echoing_proxy, training_yaml, capsys):
    echoing_proxy.update(json=False, padding=190)  # the token starts at character 190 of 200 shown
    assert main(["upload", str(training_yaml)]) == 1
    err = capsys.readouterr().err
    assert TOKEN[:10] not in err and "Bearer ***" in err


@pytest.mark.parametrize("option", [["--token", TOKEN], [f"--token={TOKEN}"], ["--tok", TOKEN]])
def test_no_token_on_the_command_line(training_yaml, capsys, option):
    assert main(["upload", str(training_yaml), *option]) == 2
    captured = capsys.readouterr()
    assert "tokens are not accepted on the command line" in captured.err
    assert TOKEN not in captured.out + captured.err


def test_no_abbreviated_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--output", str(tmp_path)])  # not taken for --output-dir (nor --tok for --token-file)
    assert "unrecognized arguments: --output" in capsys.readouterr().err


def test_the_installed_script(secured, training_yaml, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    script = Path(sys.executable).parent / "kfp-torch"
    env = {**os.environ, "KFP_HOST": secured.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN_FILE": str(token_file)}
    for _ in range(2):
        done = subprocess.run([str(script), "upload", str(training_yaml)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "exists already" in done.stdout
    assert TOKEN not in done.stdout + done.stderr
    assert len(secured.versions) == 1


# -- the fake itself rejects what the real API would ---------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "complaint"),
    [
        ("GET", "/apis/v2beta1/pipeline", {}, "is not in the KFP v2beta1 API"),
        ("DELETE", "/apis/v2beta1/experiments", {}, "is not in the KFP v2beta1 API"),
        ("GET", "/apis/v2beta1/pipelines", {"params": {"page_size": "ten"}}, "page_size='ten' is not an integer"),
        ("GET", "/apis/v2beta1/pipelines", {"params": {"limit": "1"}}, "'limit' is not declared"),
        (
            "GET",
            "/apis/v2beta1/experiments",
            {"params": {"filter": '{"predicates": [{"key": "display_name", "stringVal": "x"}]}'}},
            'filter is not a v2beta1Filter: filter.predicates[0]: unknown field "stringVal"',
        ),
        (
            "GET",
            "/apis/v2beta1/experiments",
            {"params": {"filter": '{"predicates": [{"operation": 4, "key": "display_name", "string_value": "x"}]}'}},
            "filter.predicates[0].operation: 4 is not a v2beta1PredicateOperation value",
        ),
        ("POST", "/apis/v2beta1/experiments", {"json": {"name": "x"}}, 'body: unknown field "name"'),
        (
            "POST",
            "/apis/v2beta1/experiments",
            {"json": {"display_name": "x", "displayName": "y"}},
            'field display_name given twice ("display_name", "displayName")',
        ),
        (
            "POST",
            "/apis/v2beta1/recurringruns",
            {"json": {"display_name": "x", "max_concurrency": "one"}},
            'body.max_concurrency: "one" is not an int64',
        ),
        (
            "POST",
            "/apis/v2beta1/recurringruns",
            {"json": {"trigger": {"cron_schedule": {"start_time": "2025-06-01 03:00:00"}}}},
            "is not an RFC 3339 timestamp",
        ),
        ("POST", "/apis/v2beta1/runs", {"json": {"state": "DONE"}}, '"DONE" is not a v2beta1RuntimeState value'),
        ("POST", "/apis/v2beta1/runs", {"json": {"no_such_field": 1}}, 'unknown field "no_such_field"'),
        ("POST", "/apis/v2beta1/runs", {"data": "display_name=x"}, "must be application/json"),
        (
            "POST",
            "/apis/v2beta1/pipelines/upload_version",
            {"files": {"file": ("p.yaml", b"x")}, "params": {"pipelineid": "p"}},
            "undeclared form field",
        ),
        (
            "POST",
            "/apis/v2beta1/pipelines/upload_version",
            {
                "data": b"--b\r\nContent-Disposition: form-data; name=uploadfile\r\n\r\n\r\n--b--\r\n",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
                "params": {"pipelineid": "p"},
            },
            "must be a file",
        ),
        (
            "POST",
            "/apis/v2beta1/pipelines/upload_version",
            {"data": b"--b--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
            "malformed multipart body",  # no uploadfile at all
        ),
        ("POST", "/apis/v2beta1/recurringruns/abc:enable", {"json": {"force": True}}, "takes no body"),
    ],
)
def test_the_fake_rejects_requests_that_break_the_spec(method, path, kwargs, complaint):
    import requests

    with FakeKfp() as server:
        answer = requests.request(method, server.url + path, timeout=10, **kwargs)
    assert answer.status_code == 400
    assert complaint in answer.json()["message"] and answer.json()["code"] == 3
    assert len(server.violations) == 1 and complaint in server.violations[0]


def test_compile_with_settings_is_byte_identical_too(tmp_path, capsys):
    settings = tmp_path / "cluster.yaml"
    settings.write_text("shm_size: 8Gi\ndvc_cache_pvc: dvc-cache\n")
    for folder in ("a", "b"):
        assert main([*compile_argv(tmp_path / folder), "--settings", str(settings)]) == 0
    with_settings = (tmp_path / "a" / "training_pipeline.yaml").read_bytes()
    assert with_settings == (tmp_path / "b" / "training_pipeline.yaml").read_bytes()
    assert b"dvc-cache" in with_settings


def test_local_delegates_to_make_run(monkeypatch):
    import pipelines.local

    seen = []
    monkeypatch.setattr(pipelines.local, "main", lambda argv: seen.append(argv) or 0)
    assert main(["local", "--epochs", "2", "--distributed"]) == 0
    assert seen == [["--epochs", "2", "--distributed"]]


@pytest.fixture
def local_without_data(monkeypatch, tmp_path):
    """pipelines.local where versioning any data fails the test: bad values must be refused before it."""
    import pipelines.local

    def prepare(*args):
        raise AssertionError("the data was versioned before the arguments were checked")

    monkeypatch.setattr(pipelines.local, "prepare_digits_repo", prepare)
    monkeypatch.setattr(pipelines.local, "prepare_folder_repo", prepare)
    return ["--workdir", str(tmp_path / "work")]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--distributed", "--processes", "0"], "--processes must be an integer >= 1, got 0"),
        (["--accuracy-threshold", "2"], "--accuracy-threshold must be a number in [0, 1], got 2.0"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--image-size", "0"], "--image-size must be an integer >= 1 or -1 for automatic, got 0"),
        (["--learning_rate", "0"], "--learning-rate must be a number in (0, 10), got 0.0"),
        (["--epochs", "three"], "argument --epochs: 'three' is not a whole number such as 12"),
        (["--augment", "maybe"], "argument --augment: 'maybe' is not true or false"),
        (["--fine-tune", "backbone"], "--fine-tune must be one of full, head, got 'backbone'"),
        (
            ["--repo", REPO, "--dvc-remote-config", "[1]"],
            """argument --dvc-remote-config: '[1]' is not a JSON object such as {"key": "value"}""",
        ),
        (
            ["--repo", "https://user:hunter2@example.com/data.git"],
            "--repo https://***@example.com/data.git embeds credentials; pass a URL without them and mount git "
            "credentials from a Kubernetes Secret instead",
        ),
        (
            ["--rev", "v2", "--data-path", "data/photos"],
            "--rev, --data-path go with --repo URL (data already under DVC); with the demo's digits the data's "
            "location is set for you",
        ),
        (["--data", "photos", "--repo", REPO], "--data and --repo are two sources of data: give one"),
        (["--batch", "8"], "unrecognized arguments: --batch 8"),
        (["--gpus", "1"], "unrecognized arguments: --gpus 1"),  # kfp.local ignores the train step's placement
    ],
)
def test_local_bad_values_are_one_line_errors_naming_the_flag(local_without_data, capsys, flags, message):
    assert main(["local", *local_without_data, *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"kfp-torch: error: {message}\n"
    assert "num_workers" not in err and "Traceback" not in err and "hunter2" not in err


def test_local_missing_pretrained_weights_are_refused_naming_the_flag(local_without_data, capsys, tmp_path):
    missing = tmp_path / "resnet18-f37072fd.pth"
    assert main(["local", *local_without_data, "--pretrained-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kfp-torch: error: --pretrained-weights {missing} does not exist; give a weights file")
    assert err.count("\n") == 1 and not (tmp_path / "work").exists()


def test_local_baseline_is_a_model_directory_made_absolute_or_refused(local_without_data, capsys, tmp_path):
    from pipelines.local import parse_args, plan

    model = tmp_path / "earlier" / "train" / "model"
    model.mkdir(parents=True)
    assert plan(parse_args(["--baseline", str(model)])).arguments["baseline"] == str(model)
    assert plan(parse_args(["--baseline", "none"])).arguments["baseline"] == "none"
    missing = tmp_path / "no-model"
    assert main(["local", *local_without_data, "--baseline", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kfp-torch: error: --baseline {missing}: give none, production, or a model directory")
    assert main(["local", *local_without_data, "--baseline", "latest"]) == 2
    assert "give none, production, or a model directory" in capsys.readouterr().err


def test_local_flags_are_the_pipelines_inputs_by_name():
    """One source: every pipeline input a local run can use is a flag, typed and defaulted by the pipeline."""
    from dataclasses import fields

    from components.train.trainer import TrainConfig
    from pipelines.distributed_training_pipeline import distributed_training_pipeline
    from pipelines.local import NOT_LOCAL, build_parser, flag
    from pipelines.training_pipeline import training_pipeline

    options = {option for action in build_parser()._actions for option in action.option_strings}
    inputs = training_pipeline.component_spec.inputs
    for name in set(inputs) - set(NOT_LOCAL):
        assert flag(name) in options, name
        assert name in distributed_training_pipeline.component_spec.inputs  # so --distributed takes it too
    assert {flag(item.name) for item in fields(TrainConfig)} <= options
    assert {"--repo", "--rev", "--data-path", "--dvc-remote", "--dvc-remote-config", "--pretrained-weights"} <= options
    assert not {flag(name) for name in NOT_LOCAL} & options


def test_local_flags_reach_the_pipeline_typed(tmp_path):
    from pipelines.local import parse_args, plan

    weights = tmp_path / "mobilenet_v3_small-047dcff4.pth"
    weights.write_bytes(b"weights")
    argv = ["--repo", REPO, "--rev", "v2", "--data-path", "data/photos", "--dvc-remote-config", '{"region": "eu"}']
    argv += ["--augment", "false", "--image_size", "96", "--learning-rate", "0.01", "--pretrained-weights"]
    argv += [str(weights.relative_to(Path.cwd())) if weights.is_relative_to(Path.cwd()) else str(weights)]
    run = plan(parse_args(argv + ["--architecture", "mobilenet_v3_small", "--distributed", "--processes", "3"]))
    assert run.distributed and run.repo_given and run.data_dir is None
    assert run.arguments == {
        "repo_url": REPO,
        "rev": "v2",
        "data_path": "data/photos",
        "dvc_remote_config": {"region": "eu"},
        "augment": False,
        "image_size": 96,
        "learning_rate": 0.01,
        "pretrained_weights": str(weights.resolve()),
        "architecture": "mobilenet_v3_small",
        "push_image": False,
        "deploy_target": "local",  # served, verified and stopped: make serve serves it again
        "num_workers": 3,
        "launcher": "local",
    }
    # The digits demo turns augmentation off unless asked; --augment alone means true.
    assert plan(parse_args([])).arguments == {"augment": False, "push_image": False, "deploy_target": "local"}
    assert plan(parse_args(["--augment"])).arguments["augment"] is True


def test_local_image_without_buildah_is_a_one_line_error(local_without_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    assert main(["local", *local_without_data, "--image"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kfp-torch: error: --image needs buildah: buildah is not installed") and err.count("\n") == 1
