"""The deploy step (components/deploy/step.py, what the component runs) on the fake cluster, verified for real: the
fake's images are mapped to real ``bentoml serve`` processes of the session's digits bentos, so held-out images
go through BentoML's client and are compared with evaluate's predictions. Staging, then production through
promote_pipeline's steps: a direct first deployment, a canary verified with the staging deployment's images and
promoted, a canary that answers differently removed; the registry told only after a verified deploy."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from components.deploy.deploy import DeployFailed
from components.deploy.inputs import deploy_request
from components.deploy.step import DeployInputError, held_out_for, run_step
from components.register.registry import RegisteredVersion
from tests.support.bento_server import bento_environment, serve
from tests.support.deploy_cluster import GOOD, NAME, NAMESPACE, NEWER, FakeCluster

pytestmark = pytest.mark.slow
REGISTERED = RegisteredVersion("none", "", "image-classifier", "", "", "file:///models/digits").metadata()


@pytest.fixture(scope="module")
def servers(deploy_bentos, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-servers")
    env = bento_environment(deploy_bentos["good"]["dir"].parent)
    good_env, drifted_env = ({**env, **deploy_bentos[name]["env"]} for name in ("good", "drifted"))
    with serve(deploy_bentos["good"]["bento_tag"], good_env, root) as good:
        with serve(deploy_bentos["drifted"]["bento_tag"], drifted_env, root) as drifted:
            yield {"good": good, "drifted": drifted}


@pytest.fixture
def cluster(servers):
    with FakeCluster() as fake:
        yield fake


def target(cluster, servers, canary_drifts: bool = False):
    """The deployment target whose revisions' URLs are the real servers; with ``canary_drifts`` a canary answers as
    the drifted bento (the verified image, run where it answers otherwise)."""

    def resolve(address) -> str:
        return servers["drifted" if canary_drifts and address.name.endswith("-canary") else "good"]

    return cluster.target("deployment", resolve_url=resolve)


def staged(servers, image_: str, evaluated, output, **settings):
    """``image_`` deployed to a staging cluster of its own and verified: the deploy step's output at ``output``."""
    with FakeCluster() as staging:
        return run_step(request(image_), evaluated, output, target(staging, servers), **settings)


def request(image_: str, **settings):
    return deploy_request("deployment", NAME, NAMESPACE, image_, model_tag="image-classifier:m1", **settings)


@pytest.fixture
def evaluated(digits_dir, trained_models, digits_predictions, deploy_bentos):
    return held_out_for(
        16, digits_dir, trained_models / "strong", digits_predictions, model_tag=deploy_bentos["good"]["model_tag"]
    )


def test_a_staging_deploy_is_verified_with_evaluates_answers_and_records_the_image(
    cluster, servers, evaluated, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    outcome = run_step(request(GOOD), evaluated, tmp_path / "staging", target(cluster, servers), registered=REGISTERED)
    record = json.loads((tmp_path / "staging" / "deployment.json").read_text())
    assert (outcome.image, outcome.previous_image, outcome.rolled_back) == (GOOD, "", False)
    assert outcome.url == record["url"] and outcome.url == servers["good"]
    assert record["verification"]["passed"] and record["verification"]["images"] == 16
    assert record["verification"]["model_tag"] == record["model_tag"]
    applied = yaml.safe_load_all((tmp_path / "staging" / "manifests.yaml").read_text())
    assert [manifest["kind"] for manifest in applied] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert len(list((tmp_path / "staging" / "held_out" / "images").rglob("*.png"))) == 16
    assert f"image {GOOD} of file:///models/digits recorded nowhere" in caplog.text  # the image, on the version
    assert "serves as" not in caplog.text  # staging is not production


def test_production_through_a_canary_promoted_and_marked_in_the_registry(cluster, servers, evaluated, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    production = target(cluster, servers)
    staged(servers, NEWER, evaluated, tmp_path / "staging-newer", registered=REGISTERED)
    staged(servers, GOOD, evaluated, tmp_path / "staging-good", registered=REGISTERED)
    # The first production deployment: directly (canary_percent -1), verified with the staging images.
    first = held_out_for(64, verified_deployment=tmp_path / "staging-good", image=GOOD)
    assert len(first.held_out) == 16 and first.registered == REGISTERED  # the staging set and version, as they were
    run_step(request(GOOD), first, tmp_path / "prod-1", production, production=True)
    # Then a newer verified image: a canary beside it, verified, then promoted to all traffic.
    newer = held_out_for(64, verified_deployment=tmp_path / "staging-newer", image=NEWER)
    caplog.clear()
    canary = run_step(request(NEWER, canary_percent=25), newer, tmp_path / "canary", production, production=False)
    assert canary.record["canary"] is True and canary.record["verification"]["passed"]
    assert production.current().image == GOOD  # the stable revision still serves
    assert "serves as" not in caplog.text  # a canary is not production yet
    promoted = run_step(
        request(NEWER, promote=True), newer, tmp_path / "promoted", production, promote=True, production=True
    )
    assert (promoted.image, promoted.previous_image, promoted.record["promoted"]) == (NEWER, GOOD, True)
    assert production.current().image == NEWER
    assert "file:///models/digits serves as classifier, recorded nowhere" in caplog.text


def test_a_canary_answering_otherwise_is_removed_and_production_is_untouched(
    cluster, servers, evaluated, tmp_path, caplog
):
    production = target(cluster, servers, canary_drifts=True)
    staged(servers, GOOD, evaluated, tmp_path / "staging")
    verified = held_out_for(64, verified_deployment=tmp_path / "staging", image=GOOD)
    run_step(request(GOOD), verified, tmp_path / "prod", production)
    staged(servers, NEWER, evaluated, tmp_path / "staging-newer")
    newer = held_out_for(64, verified_deployment=tmp_path / "staging-newer", image=NEWER)
    caplog.set_level(logging.INFO)
    caplog.clear()
    with pytest.raises(DeployFailed, match=r"failed verification: verification failed: 16 held-out images") as failed:
        run_step(request(NEWER, canary_percent=25), newer, tmp_path / "canary", production, registered=REGISTERED)
    assert f"The canary was removed; {GOOD} serves all traffic again" in str(failed.value)
    assert production.current().image == GOOD
    assert not (tmp_path / "canary").exists()  # a failed step leaves no output
    assert "recorded nowhere" not in caplog.text  # nothing told to the registry
    # fail_on_rollback=false: the step ends, saying it rolled back and why.
    outcome = run_step(
        request(NEWER, canary_percent=25),
        newer,
        tmp_path / "canary-2",
        production,
        registered=REGISTERED,
        fail_on_rollback=False,
    )
    assert "recorded nowhere" not in caplog.text  # a rolled-back deployment is not recorded either
    assert outcome.rolled_back is True and outcome.url == "" and production.current().image == GOOD
    assert "The canary was removed" in outcome.record["cause"]
    assert outcome.record["verification"]["passed"] is False and outcome.record["canary"] is True


def test_only_the_image_a_deployment_verified_is_promoted(cluster, servers, evaluated, tmp_path):
    run_step(request(GOOD), evaluated, tmp_path / "staging", target(cluster, servers))
    with pytest.raises(
        DeployInputError, match=rf"image {NEWER} is not the one the deployment in .* verified \({GOOD}\)"
    ):
        held_out_for(64, verified_deployment=tmp_path / "staging", image=NEWER)
    record = json.loads((tmp_path / "staging" / "deployment.json").read_text())
    record["verification"]["passed"] = False
    (tmp_path / "staging" / "deployment.json").write_text(json.dumps(record))
    with pytest.raises(DeployInputError, match=r"was not verified: nothing to promote"):
        held_out_for(64, verified_deployment=tmp_path / "staging", image=GOOD)
    with pytest.raises(DeployInputError, match=r"nothing to verify the deployment with: .* \(given: model\)"):
        held_out_for(64, model_dir=tmp_path)
