"""The deploy step on the ``local`` target, whole, under kfp.local: a real ``bentoml serve`` of real bentos of the
session's digits model, verified against evaluate's predictions; and ``make serve``, which serves what was deployed.

The tests of this module run in order on one deployment: the good bento first, then the same again (a no-op), then
a bento that cannot start and one with a drifted preprocessing, each rolled back to the good one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from kfp import local

from components.common.processes import free_port
from components.deploy.local_target import STATE_DIR_ENV, LocalTarget
from tests.support.deploy_pipeline import deploy_locally

pytestmark = pytest.mark.slow
NAME = "image-classifier"


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """The local target's state directory, for the steps kfp.local starts (they inherit the environment)."""
    directory = tmp_path_factory.mktemp("local-deployments")
    before = os.environ.get(STATE_DIR_ENV)
    os.environ[STATE_DIR_ENV] = str(directory)
    yield directory
    if before is None:
        os.environ.pop(STATE_DIR_ENV)
    else:
        os.environ[STATE_DIR_ENV] = before


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline-root")


@pytest.fixture
def run_deploy_step(state, pipeline_root, trained_models, digits_dir, digits_predictions, deploy_bentos):
    """Deploy one of ``deploy_bentos`` through the step; the step's ``deployment.json`` (or the failure)."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)

    def run(bento: str, **arguments) -> dict:
        before = set(pipeline_root.rglob("deployment.json"))
        deploy_locally(
            model_uri=str(trained_models / "strong"),
            dataset_uri=str(digits_dir),
            predictions_uri=str(digits_predictions),
            bento_uri=str(deploy_bentos[bento]["dir"]),
            **arguments,
        )
        (written,) = set(pipeline_root.rglob("deployment.json")) - before
        return {**json.loads(written.read_text()), "dir": written.parent}

    return run


def deployed(state: Path) -> dict:
    return LocalTarget(NAME, state).record()


def stored_bentos(state: Path) -> list[str]:
    versions = state / NAME / "bentoml" / "bentos" / NAME
    return sorted(path.name for path in versions.iterdir() if path.is_dir())


def make_serve(state: Path) -> dict:
    """What ``make serve`` serves: its /model_info, from a real ``bentoml serve`` started as the Makefile does."""
    port = free_port()
    command = [sys.executable, "-m", "components.deploy.local_target", "serve", "--port", str(port)]
    server = subprocess.Popen(
        command,
        env={**os.environ, STATE_DIR_ENV: str(state)},
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/model_info", data=b"{}", method="POST")
                request.add_header("Content-Type", "application/json")
                with urllib.request.urlopen(request, timeout=2) as answer:
                    return json.loads(answer.read())
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        raise AssertionError("make serve did not answer within 120 s")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_a_deploy_serves_the_bento_verifies_it_and_stops_and_make_serve_serves_it(
    run_deploy_step, state, deploy_bentos, capfd
):
    good = deploy_bentos["good"]
    result = run_deploy_step("good")
    assert result["url"] == "http://127.0.0.1:3000" and result["image"] == good["bento_tag"]
    assert (result["previous_image"], result["rolled_back"], result["changed"]) == ("", False, True)
    verification = result["verification"]
    assert verification["passed"] and verification["images"] == verification["agreed"] == 64
    assert verification["answered_200"] == 64 and verification["p50_ms"] > 0 and verification["p99_ms"] > 0
    assert verification["served_accuracy"] == verification["evaluated_accuracy"]
    assert result["model_tag"] == good["model_tag"] and result["labels"]["kfp-torch-lifecycle/model-tag"]
    # The artifact's metadata, what the report step reads.
    executor_output = json.loads((result["dir"].parent / "executor_output.json").read_text())
    (artifact,) = executor_output["artifacts"]["deployment"]["artifacts"]
    metadata = artifact["metadata"]
    assert (metadata["url"], metadata["image"], metadata["rolled_back"]) == (result["url"], good["bento_tag"], False)
    assert metadata["model_tag"] == good["model_tag"]
    assert metadata["verification"]["images"] == metadata["verification"]["agreed"] == 64
    assert metadata["verification"]["p50_ms"] == verification["p50_ms"] and metadata["verification"]["p99_ms"] > 0
    (manifest,) = yaml.safe_load_all((result["dir"] / "manifests.yaml").read_text())
    assert manifest["bento"] == good["bento_tag"] and manifest["target"] == "local"
    assert len(list((result["dir"] / "held_out" / "images").rglob("*.png"))) == 64
    # Recorded as deployed and verified; the step's own server is gone.
    record = deployed(state)
    assert record["bento"] == good["bento_tag"] and record["verified"] is True
    assert record["verification"]["agreed"] == 64
    log = capfd.readouterr().out
    served_on = log.split(f"bentoml serve {good['bento_tag']} on ")[1].split()[0]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{served_on}/readyz", timeout=2)
    assert make_serve(state)["model_tag"] == good["model_tag"]


def test_the_same_bento_again_changes_nothing_and_says_so(run_deploy_step, state, deploy_bentos, capfd):
    good = deploy_bentos["good"]
    before = deployed(state)
    result = run_deploy_step("good")
    assert result["changed"] is False and result["verification"]["passed"]
    assert result["previous_image"] == good["bento_tag"] and result["rolled_back"] is False
    log = capfd.readouterr().out
    assert f"local {NAME} already serves {good['archive']} with these settings: nothing changed" in log
    assert deployed(state)["deployed_at"] == before["deployed_at"]
    assert stored_bentos(state) == [good["bento_tag"].split(":")[1]]


def test_a_bento_that_cannot_start_rolls_back_and_make_serve_still_serves_the_previous(
    run_deploy_step, state, deploy_bentos, capfd
):
    good, broken = deploy_bentos["good"], deploy_bentos["broken"]
    with pytest.raises(RuntimeError, match=r"finished with status .*FAILURE.*Inner task failed: .*deploy"):
        run_deploy_step("broken")
    log = capfd.readouterr().out
    assert f"the service of {broken['bento_tag']} failed to start 2 times" in log
    assert "INVALID_PROTOBUF" in log  # the server's own reason, from its log
    assert f"Rolled back to {good['bento_tag']}" in log and "which is healthy again" in log
    record = deployed(state)
    assert record["bento"] == good["bento_tag"] and record["verified"] is True
    assert stored_bentos(state) == [good["bento_tag"].split(":")[1]]  # the failed bento is not kept
    assert make_serve(state)["model_tag"] == good["model_tag"]


def test_a_drifted_preprocessing_fails_the_verification_and_rolls_back(run_deploy_step, state, deploy_bentos, capfd):
    good, drifted = deploy_bentos["good"], deploy_bentos["drifted"]
    with pytest.raises(RuntimeError, match=r"finished with status .*FAILURE.*Inner task failed: .*deploy"):
        run_deploy_step("drifted")
    log = capfd.readouterr().out
    assert "failed verification: verification failed: 64 held-out images: 64 answered 200, " in log
    assert f"Rolled back to {good['bento_tag']}" in log
    assert deployed(state)["bento"] == good["bento_tag"]
    # With fail_on_rollback=false the step ends, saying it rolled back and why.
    result = run_deploy_step("drifted", fail_on_rollback=False)
    assert result["rolled_back"] is True and result["image"] == drifted["bento_tag"]
    assert result["previous_image"] == good["bento_tag"] and "failed verification" in result["cause"]
    assert result["verification"]["passed"] is False and result["verification"]["agreed"] < 64
    assert deployed(state)["bento"] == good["bento_tag"] and deployed(state)["verified"] is True


def test_make_run_ends_with_the_promoted_model_deployed_locally_and_verified(tmp_path, monkeypatch, capsys):
    from pipelines.local import main

    monkeypatch.delenv(STATE_DIR_ENV, raising=False)  # make run puts it beside the run
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    assert main(["--workdir", str(tmp_path), "--epochs", "4", "--compile-dir", str(tmp_path / "compiled")]) == 0
    assert re.search(r"  deploy(-\d+)? success in ", capsys.readouterr().out)
    record = deployed(tmp_path / "deploy")
    assert record["verified"] is True and record["verification"]["agreed"] == record["verification"]["images"] == 64
    (output,) = (tmp_path / "pipeline-root").glob("pytorch-training-*/deploy*/deployment/deployment.json")
    result = json.loads(output.read_text())
    assert result["image"] == record["bento"] and result["url"] == "http://127.0.0.1:3000"
    bento = json.loads(
        next((tmp_path / "pipeline-root").glob("pytorch-training-*/build-bento/bento/bento.json")).read_text()
    )
    assert record["bento"] == bento["bento_tag"] and record["model_tag"] == bento["model_tag"]
