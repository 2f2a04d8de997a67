"""The deploy step on the fake cluster, through ``run_deploy``: both cluster targets (KServe 0.15.2 and 0.20.0, in
Standard and Knative mode), against the fake Deployment, Service, HorizontalPodAutoscaler and KServe controllers
(tests/support/fake_apps.py, fake_kserve.py), every manifest checked against the real schemas."""

from __future__ import annotations

import dataclasses
import time

import pytest

from components.common.kube.api import KubernetesApiError
from components.deploy import manifests
from components.deploy.deploy import DeployFailed, run_deploy, run_promotion
from components.deploy.kserve_target import inference_service
from components.deploy.kube_client import ApplyConflict
from components.deploy.target import DeployRequest, InvalidValue, ServiceAddress
from tests.support import server_side_apply as ssa
from tests.support.deploy_cluster import (
    CRASH_LOG,
    CRASHING,
    GOOD,
    NAME,
    NAMESPACE,
    NEWER,
    UNPULLABLE,
    UNSCHEDULABLE,
    FakeCluster,
    Verified,
    passes,
    request,
)
from tests.support.fake_apps import apps_controllers
from tests.support.fake_kube import FakeKube, Fault
from tests.support.kube_schemas import KSERVE_RELEASES, problems

TARGETS = [
    pytest.param("deployment", "0.20.0", {}, id="deployment"),
    *(pytest.param("kserve", r, {"kserve_mode": "standard", "kserve_version": r}, id=f"kserve-{r}-standard")
      for r in KSERVE_RELEASES),
    *(pytest.param("kserve", r, {"kserve_mode": "knative", "kserve_version": r}, id=f"kserve-{r}-knative")
      for r in KSERVE_RELEASES),
]  # fmt: skip


def serving(address: ServiceAddress) -> str:
    """The URL hook: which image an address serves, for a verification that checks it."""
    return f"http://{address.host}/?image={address.image}"


def verify_serves(image: str):
    """A verification that passes only for what ``image`` serves: a wrong image is caught as a model that answers
    differently from what evaluate saw."""
    return lambda url: Verified(url.endswith(f"image={image}"), f"64 images, {64 if url.endswith(image) else 3} agreed")


def lines():
    said: list[str] = []
    return said, said.append


# --- bad input, before anything is sent -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        ({"image": "registry.example.com/ml/image-classifier:v1"}, "not pinned by digest"),
        ({"image": "registry.example.com/ml/image-classifier@sha256:abc"}, "not pinned by digest"),
        ({"name": "Classifier_1"}, "not a DNS-1035 label"),
        ({"name": "a" * 64}, "DNS-1035"),
        ({"name": "a" * 57}, "too long"),
        ({"namespace": "Team A"}, "namespace 'Team A'"),
        ({"namespace": ""}, "needs a namespace"),
        ({"min_replicas": 0}, "min_replicas must be an integer >= 1"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas (2) is below min_replicas (3)"),
        ({"target": "helm"}, "target 'helm' is not one of kserve, deployment, local"),
        ({"canary_percent": 101}, "canary_percent must be an integer from 0 to 100"),
        ({"canary_percent": -1}, "canary_percent must be an integer from 0 to 100"),
        ({"cpu": "2", "cpu_limit": "1"}, "must not exceed its limit"),
        ({"memory": "16K"}, "not a Kubernetes quantity"),
        ({"scale_metric": "rps"}, "scale_metric 'rps' is not one of cpu, memory"),
        ({"image_pull_secrets": ('{"auths": {"r": {"auth": "c2VjcmV0"}}}',)}, "is not a Secret name"),
        ({"service_account": "Model Server"}, "ServiceAccount name"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(change, named):
    with FakeCluster() as cluster:
        bad = dataclasses.replace(request("deployment"), **change)
        with pytest.raises(InvalidValue, match=None) as raised:
            run_deploy(cluster.target("deployment"), bad, passes)
        assert named in str(raised.value)
        assert "c2VjcmV0" not in str(raised.value), "a pasted credential is never echoed"
        assert cluster.kube.requests == [], "nothing may be sent for a request that is refused"


def test_kserve_settings_are_checked_for_the_mode_and_release():
    base = request("kserve")
    for change, named in [
        ({"kserve_mode": "serverful"}, "kserve_mode 'serverful'"),
        ({"kserve_version": "latest"}, "kserve_version 'latest'"),
        ({"kserve_mode": "standard", "canary_percent": 10}, "needs kserve_mode knative"),
        ({"kserve_mode": "knative", "scale_metric": "cpu"}, "not one of concurrency, rps"),
    ]:
        with pytest.raises(InvalidValue, match=None) as raised:
            dataclasses.replace(base, **change).validate()
        assert named in str(raised.value)


@pytest.mark.parametrize(
    "version, mode, sent",
    [("0.15", "standard", "RawDeployment"), ("0.15.2", "knative", "Serverless"),
     ("0.16.0", "rawdeployment", "RawDeployment"), ("0.17", "standard", "Standard"),
     ("v0.20.0", "serverless", "Knative"), ("0.20.0", "knative", "Knative")],
)  # fmt: skip
def test_the_mode_is_named_as_the_clusters_kserve_release_accepts(version, mode, sent):
    knative = mode in ("knative", "serverless")
    r = request("kserve", kserve_mode=mode, kserve_version=version, scale_metric="rps" if knative else "cpu")
    assert inference_service(r)["metadata"]["annotations"][manifests.KSERVE_MODE_ANNOTATION] == sent


def test_kserve_015_would_silently_serve_the_new_names_in_its_default_mode():
    """Why the release matters: 0.15 takes any name it does not know for its default mode (GetDeploymentMode)."""
    with FakeCluster("0.15.2") as cluster:
        assert cluster.kserve.resolve_mode({manifests.KSERVE_MODE_ANNOTATION: "Standard"}) == "Serverless"
        target = cluster.target("kserve")
        run_deploy(target, request("kserve", kserve_mode="standard", kserve_version="0.15.2"), passes,
                   deadline_seconds=10, echo=lambda line: None)  # fmt: skip
        live = cluster.api().get(target_kinds()["kserve"], NAMESPACE, NAME)
        assert live["status"]["deploymentMode"] == "RawDeployment"


def target_kinds():
    from components.deploy.kube_client import DEPLOYMENTS, INFERENCE_SERVICES

    return {"kserve": INFERENCE_SERVICES, "deployment": DEPLOYMENTS}


# --- what is sent -------------------------------------------------------------------------------------------------


def test_deployment_manifests_are_valid_kubernetes_objects_with_the_lifecycle_settings():
    r = request("deployment", image_pull_secrets=("regcred",), service_account="model-server")
    deployment, service, hpa = manifests.deployment(r), manifests.service(r), manifests.autoscaler(r)
    for body in (deployment, service, hpa):
        assert problems(body) == [], body["kind"]
    spec = deployment["spec"]
    assert "replicas" not in spec, "the HorizontalPodAutoscaler owns replicas"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == GOOD and container["ports"][0]["containerPort"] == 3000
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 3000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 3000}
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}  # fmt: skip
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["serviceAccountName"] == "model-server"
    for labels in (deployment["metadata"]["labels"], service["metadata"]["labels"], hpa["metadata"]["labels"]):
        assert labels["kfp-torch-lifecycle/model-tag"] == "image-classifier.v7gq2"
        assert labels["kfp-torch-lifecycle/dataset-commit"] == "3f" * 20
        assert labels["kfp-torch-lifecycle/pipeline-run"] == "run-1"
    assert "kfp-torch-lifecycle/pipeline-run" not in spec["template"]["metadata"]["labels"], "a new run is no new pod"
    assert hpa["spec"]["scaleTargetRef"]["name"] == NAME and hpa["spec"]["minReplicas"] == 2


@pytest.mark.parametrize("release", KSERVE_RELEASES)
@pytest.mark.parametrize("mode", ["standard", "knative"])
def test_inference_services_are_valid_against_kserves_crd(release, mode):
    r = request("kserve", kserve_mode=mode, kserve_version=release, image_pull_secrets=("regcred",),
                service_account="model-server", canary_percent=10 if mode == "knative" else None)  # fmt: skip
    body = inference_service(r)
    assert problems(body, release) == []
    (container,) = body["spec"]["predictor"]["containers"]
    port = {} if mode == "knative" else {"port": 3000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", **port}, "Knative probes name no port"
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", **port}
    predictor = body["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 3)
    assert predictor["imagePullSecrets"] == [{"name": "regcred"}]
    misspelt = inference_service(r)
    misspelt["spec"]["predictor"]["minReplica"] = 1
    assert any("minReplica" in problem for problem in problems(misspelt, release))


def test_the_fake_refuses_unknown_fields_as_the_api_server_does():
    with FakeCluster() as cluster:
        body = manifests.deployment(request("deployment"))
        body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        with pytest.raises(KubernetesApiError, match="HTTP 422.*imagePullPolicyy"):
            cluster.api().apply(target_kinds()["deployment"], body)


# --- the whole step -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_kind, release, settings", TARGETS)
def test_an_image_that_cannot_be_pulled_is_rolled_back(target_kind, release, settings):
    with FakeCluster(release) as cluster:
        said, echo = lines()
        target = cluster.target(target_kind, resolve_url=serving, echo=echo)
        first = run_deploy(target, request(target_kind, GOOD, **settings), verify_serves(GOOD), deadline_seconds=10,
                           echo=echo)  # fmt: skip
        assert first.changed and first.previous_image == "" and first.url.endswith(GOOD)
        with pytest.raises(DeployFailed) as failed:
            run_deploy(target, request(target_kind, UNPULLABLE, **settings), verify_serves(UNPULLABLE),
                       deadline_seconds=0.8, echo=echo)  # fmt: skip
        message = str(failed.value)
        assert "ImagePullBackOff" in message and UNPULLABLE in message
        assert f"Rolled back to {GOOD}" in message and "healthy again" in message
        assert failed.value.result.rolled_back and failed.value.result.previous_image == GOOD
        assert target.current().image == GOOD
        again = run_deploy(target, request(target_kind, GOOD, **settings), verify_serves(GOOD), deadline_seconds=10,
                           echo=echo)  # fmt: skip
        assert not again.changed, "after the rollback the previous image serves with its settings"


@pytest.mark.parametrize("target_kind, release, settings", TARGETS)
def test_a_crashing_image_fails_with_its_last_log_lines_and_is_rolled_back(target_kind, release, settings):
    with FakeCluster(release) as cluster:
        target = cluster.target(target_kind, resolve_url=serving)
        run_deploy(target, request(target_kind, GOOD, **settings), verify_serves(GOOD), echo=lambda line: None)
        with pytest.raises(DeployFailed) as failed:
            run_deploy(target, request(target_kind, CRASHING, **settings), verify_serves(CRASHING),
                       deadline_seconds=0.8, echo=lambda line: None)  # fmt: skip
        assert "CrashLoopBackOff" in str(failed.value) and CRASH_LOG[-1] in str(failed.value)
        assert target.current().image == GOOD


@pytest.mark.parametrize("target_kind, release, settings", TARGETS)
def test_a_model_that_answers_differently_fails_verification_and_is_rolled_back(target_kind, release, settings):
    """NEWER rolls out fine, but what it serves disagrees with evaluate (another preprocessing, a stale model):
    only the verification sees it."""
    with FakeCluster(release) as cluster:
        target = cluster.target(target_kind, resolve_url=serving)
        run_deploy(target, request(target_kind, GOOD, **settings), verify_serves(GOOD), echo=lambda line: None)
        with pytest.raises(DeployFailed, match="failed verification: 64 images, 3 agreed") as failed:
            run_deploy(target, request(target_kind, NEWER, **settings), verify_serves(GOOD), deadline_seconds=10,
                       echo=lambda line: None)  # fmt: skip
        assert f"Rolled back to {GOOD}" in str(failed.value)
        assert target.current().image == GOOD


@pytest.mark.parametrize("target_kind, release, settings", TARGETS)
def test_deploying_the_same_image_twice_changes_nothing_and_says_so(target_kind, release, settings):
    with FakeCluster(release) as cluster:
        target = cluster.target(target_kind, resolve_url=serving)
        run_deploy(target, request(target_kind, GOOD, run="run-1", **settings), passes, echo=lambda line: None)
        sent = cluster.kube.count("PATCH")
        said, echo = lines()
        result = run_deploy(target, request(target_kind, GOOD, run="run-2", **settings), passes, echo=echo)
        assert not result.changed and not result.rolled_back
        assert any("with these settings: nothing changed" in line for line in said)
        assert cluster.kube.count("PATCH") == sent, "a second deploy of the same image sends no write"
        assert result.verification.passed, "what serves is still verified"


@pytest.mark.parametrize("target_kind, release, settings", TARGETS)
def test_a_first_deployment_that_fails_is_removed_unless_kept(target_kind, release, settings):
    with FakeCluster(release) as cluster:
        target = cluster.target(target_kind)
        with pytest.raises(DeployFailed, match="first deployment and was removed"):
            run_deploy(target, request(target_kind, CRASHING, **settings), passes, deadline_seconds=0.6,
                       echo=lambda line: None)  # fmt: skip
        assert target.current() is None
        with pytest.raises(DeployFailed, match="kept for debugging"):
            run_deploy(target, request(target_kind, CRASHING, **settings), passes, keep_failed=True,
                       deadline_seconds=0.6, echo=lambda line: None)  # fmt: skip
        assert target.current().image == CRASHING


def test_an_unschedulable_pod_fails_with_the_schedulers_message():
    with FakeCluster() as cluster:
        with pytest.raises(DeployFailed, match="Unschedulable: 0/3 nodes are available: 3 Insufficient cpu"):
            run_deploy(cluster.target("deployment"), request("deployment", UNSCHEDULABLE), passes,
                       deadline_seconds=0.6, echo=lambda line: None)  # fmt: skip


def test_a_missing_service_account_is_named_from_the_replicasets_events():
    with FakeCluster() as cluster:
        bad = request("deployment", service_account="model-server")
        with pytest.raises(DeployFailed, match='FailedCreate: .*serviceaccount "model-server" not found'):
            run_deploy(cluster.target("deployment"), bad, passes, deadline_seconds=0.6, echo=lambda line: None)


def test_progress_deadline_exceeded_fails_before_the_steps_deadline():
    with FakeCluster() as cluster:
        target = cluster.target("deployment")
        run_deploy(target, request("deployment", GOOD), passes, echo=lambda line: None)
        started = time.monotonic()
        with pytest.raises(DeployFailed, match='deployment "classifier" exceeded its progress deadline'):
            run_deploy(target, request("deployment", UNPULLABLE, progress_deadline_seconds=1), passes,
                       deadline_seconds=60, echo=lambda line: None)  # fmt: skip
        assert time.monotonic() - started < 30, "the Deployment's own verdict ends the wait"


def test_an_hpa_managed_replica_count_survives_a_redeploy():
    with FakeCluster() as cluster:
        target = cluster.target("deployment")
        run_deploy(target, request("deployment", GOOD, max_replicas=6), passes, echo=lambda line: None)
        cluster.autoscalers.load[(NAMESPACE, NAME)] = 5  # traffic: the autoscaler asks for 5
        api = cluster.api()
        deployments = target_kinds()["deployment"]
        cluster.kube.wait_for(lambda: api.get(deployments, NAMESPACE, NAME)["spec"]["replicas"] == 5)
        run_deploy(target, request("deployment", NEWER, max_replicas=6), passes, echo=lambda line: None)
        live = api.get(deployments, NAMESPACE, NAME)
        assert live["spec"]["replicas"] == 5 and live["status"]["updatedReplicas"] == 5
        owners = {
            e["manager"] for e in live["metadata"]["managedFields"] if "f:replicas" in e["fieldsV1"].get("f:spec", {})
        }
        assert owners == {"kube-controller-manager"}, "the autoscaler alone owns replicas"


def test_a_field_another_manager_changed_is_a_conflict_named_with_the_way_out():
    with FakeCluster() as cluster:
        target = cluster.target("deployment")
        run_deploy(target, request("deployment", GOOD), passes, echo=lambda line: None)
        obj = cluster.deployments.objects[(NAMESPACE, NAME)]
        image_path = ("spec", "template", "spec", "containers", ssa.Key("bento"), "image")
        ssa.update(obj.state, obj.body, image_path, NEWER, "kubectl-set", "apps/v1", "", "2025-01-01T00:00:00Z")
        with pytest.raises(ApplyConflict, match='conflict with "kubectl-set".*image.*--force-conflicts'):
            target.apply(request("deployment", UNPULLABLE))


def test_a_cluster_without_kserve_is_told_so_with_the_alternative():
    workloads_cluster = FakeCluster()
    kube = FakeKube(apps_controllers(workloads_cluster.workloads)).start()
    try:
        from components.deploy.kserve_target import KServeTarget
        from components.deploy.kube_client import DeployApi
        from tests.support.deploy_cluster import FAST_RETRY

        target = KServeTarget(DeployApi(kube.api_client(), FAST_RETRY), NAMESPACE, NAME, echo=lambda line: None)
        with pytest.raises(KubernetesApiError, match="serves no KServe InferenceService.*target=deployment"):
            run_deploy(target, request("kserve"), passes)
    finally:
        kube.stop()


def test_a_missing_permission_fails_at_once_naming_the_rule():
    with FakeCluster() as cluster:
        cluster.kube.inject(Fault("PATCH", f"/deployments/{NAME}", status=403))
        with pytest.raises(
            KubernetesApiError, match=r"apiGroups \['apps'\], resources \['deployments'\], verbs \['patch'\]"
        ):
            run_deploy(cluster.target("deployment"), request("deployment"), passes, echo=lambda line: None)
        assert cluster.kube.count("PATCH") == 1, "a 403 is not retried"


# --- canaries -----------------------------------------------------------------------------------------------------


def test_a_deployment_canary_is_a_second_deployment_behind_the_same_service_then_promoted():
    with FakeCluster() as cluster:
        target = cluster.target("deployment", resolve_url=serving)
        api, kinds = cluster.api(), target_kinds()
        run_deploy(target, request("deployment", GOOD, min_replicas=3), passes, echo=lambda line: None)
        canary = request("deployment", NEWER, min_replicas=3, canary_percent=25)
        result = run_deploy(target, canary, verify_serves(NEWER), echo=lambda line: None)
        assert result.canary and result.url.startswith("http://classifier-canary.team-a.svc")
        assert api.get(kinds["deployment"], NAMESPACE, "classifier-canary")["spec"]["replicas"] == 1  # 1 of 4: 25%
        service = cluster.services.objects[(NAMESPACE, NAME)].body
        assert service["spec"]["selector"] == {manifests.NAME_LABEL: NAME}, "the Service selects both tracks"
        promoted = run_promotion(target, canary, verify_serves(NEWER), echo=lambda line: None)
        assert promoted.image == NEWER and target.current().image == NEWER
        assert api.get(kinds["deployment"], NAMESPACE, "classifier-canary") is None


def test_a_failed_canary_is_removed_and_the_stable_revision_keeps_serving():
    with FakeCluster() as cluster:
        target = cluster.target("deployment", resolve_url=serving)
        run_deploy(target, request("deployment", GOOD), passes, echo=lambda line: None)
        with pytest.raises(DeployFailed, match="The canary was removed"):
            run_deploy(target, request("deployment", NEWER, canary_percent=10), verify_serves(GOOD),
                       echo=lambda line: None)  # fmt: skip
        assert cluster.api().get(target_kinds()["deployment"], NAMESPACE, "classifier-canary") is None
        assert target.current().image == GOOD


@pytest.mark.parametrize("release", KSERVE_RELEASES)
def test_a_kserve_canary_takes_its_share_of_the_traffic_then_all_of_it(release):
    with FakeCluster(release) as cluster:
        target = cluster.target("kserve", resolve_url=serving)
        settings = {"kserve_mode": "knative", "kserve_version": release}
        run_deploy(target, request("kserve", GOOD, **settings), passes, echo=lambda line: None)
        canary = request("kserve", NEWER, canary_percent=25, **settings)
        result = run_deploy(target, canary, verify_serves(NEWER), echo=lambda line: None)
        assert result.url.startswith("http://latest-classifier-predictor.team-a.svc"), "verified through its tag route"
        live = cluster.api().get(target_kinds()["kserve"], NAMESPACE, NAME)
        traffic = {t["revisionName"]: t["percent"] for t in live["status"]["components"]["predictor"]["traffic"]}
        assert traffic == {"classifier-predictor-00002": 25, "classifier-predictor-00001": 75}
        run_promotion(target, canary, verify_serves(NEWER), echo=lambda line: None)
        live = cluster.api().get(target_kinds()["kserve"], NAMESPACE, NAME)
        predictor = live["status"]["components"]["predictor"]
        assert [(t["revisionName"], t["percent"]) for t in predictor["traffic"]] == [
            ("classifier-predictor-00002", 100)
        ]
        assert predictor["latestRolledoutRevision"] == "classifier-predictor-00002", "promotion makes no new revision"


def test_a_request_for_another_service_is_refused_by_the_target():
    with FakeCluster() as cluster:
        with pytest.raises(ValueError, match="this target serves deployment team-a/classifier"):
            cluster.target("deployment").apply(dataclasses.replace(request("deployment"), name="other"))


def test_requests_carry_every_setting_as_a_frozen_value():
    r = DeployRequest("deployment", NAME, NAMESPACE, GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.image = NEWER  # type: ignore[misc]
