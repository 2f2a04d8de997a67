"""Where the pipelines deploy: the training pipelines' deploy_target and deploy_namespace, promote_pipeline's canary
and promotion, the deploy step's settings (per step and the cluster's), and the arguments checked before a run."""

from __future__ import annotations

import pytest
import yaml
from google.protobuf import json_format

from components.check_arguments.checks import check_values
from pipelines.arguments import check_arguments
from pipelines.compile import compile_all
from pipelines.kubernetes_settings import DEFAULT_STEPS, SettingsError, settings_from_dict
from pipelines.promote_pipeline import promote_pipeline
from pipelines.training_pipeline import training_pipeline
from tests.support.compiled_yaml import parse_strictly

IMAGE = "registry.example.com/ml/image-classifier@sha256:" + "ab" * 32
DEPLOY_SETTINGS = """
deploy:
  service_account: model-server
  image_pull_secrets: [registry-pull, mirror-pull]
  kserve_version: "0.15.2"
  kserve_mode: standard
  min_replicas: 2
  max_replicas: 6
  memory: 2Gi
  memory_limit: 4Gi
steps:
  deploy:
    timeout_seconds: 1200
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    settings = tmp_path_factory.mktemp("settings") / "cluster.yaml"
    settings.write_text(DEPLOY_SETTINGS)
    paths = compile_all(tmp_path_factory.mktemp("compiled"), settings_path=settings)
    return {path.stem: parse_strictly(path) for path in paths}


def tasks_of(spec) -> dict:
    """Every task by name, with the conditions of the branches it sits in (outermost first)."""
    found = {}

    def walk(dag, conditions):
        for name, task in dag.tasks.items():
            component = spec.components[task.component_ref.name]
            condition = [task.trigger_policy.condition] if task.trigger_policy.condition else []
            if component.HasField("dag"):
                walk(component.dag, conditions + condition)
            else:
                found[name] = (task, conditions + condition)

    walk(spec.root.dag, [])
    return found


def constants(task) -> dict:
    return {
        name: json_format.MessageToDict(value.runtime_value.constant)
        for name, value in task.inputs.parameters.items()
        if value.HasField("runtime_value")
    }


def test_the_training_pipeline_deploys_a_promoted_bento_locally_or_its_image_to_a_namespace(compiled):
    spec, executors = compiled["training_pipeline"]
    tasks = tasks_of(spec)
    deploys = {name: found for name, found in tasks.items() if name.split("-")[0] == "deploy"}
    local = {name: found for name, found in deploys.items() if constants(found[0]).get("target") == "local"}
    (cluster_name,) = set(deploys) - set(local)
    cluster, cluster_conditions = deploys[cluster_name]
    # Local: inside the promotion gate, on each way through the packaging, when deploy_target is local.
    assert len(local) == 3
    for task, conditions in local.values():
        assert task.inputs.artifacts["bento"].component_input_artifact == "pipelinechannel--build-bento-bento"
        assert any("pipelinechannel--deploy_target'] == 'local'" in c for c in conditions)
        assert any("evaluate-Output" in c for c in conditions)
    # A cluster: the image containerize pushed, by digest, into deploy_namespace, when one is given.
    assert cluster.inputs.parameters["image"].component_input_parameter == "pipelinechannel--containerize-Output"
    assert cluster.inputs.artifacts["bento"].component_input_artifact == "pipelinechannel--build-bento-bento"
    assert cluster.inputs.parameters["namespace"].component_input_parameter == "pipelinechannel--deploy_namespace"
    assert cluster.inputs.parameters["target"].component_input_parameter == "pipelinechannel--deploy_target"
    assert any("pipelinechannel--deploy_namespace'] != ''" in c for c in cluster_conditions)
    assert any(
        "!(inputs.parameter_values['pipelinechannel--deploy_target'] == 'local')" in c for c in cluster_conditions
    )
    for task, conditions in deploys.values():
        assert set(task.inputs.artifacts) >= {"model", "dataset", "predictions", "evaluation", "registered"}
        assert task.inputs.artifacts["predictions"].component_input_artifact == "pipelinechannel--evaluate-predictions"
        assert any("evaluate-Output" in c for c in conditions)
        assert task.caching_options.enable_cache is False  # a cached deploy would skip the deployment
        assert task.inputs.parameters["pipeline_run"].runtime_value.constant.string_value == "{{$.pipeline_job_uuid}}"
    # The cluster's deploy settings are the cluster task's constants; names of Secrets only.
    given = constants(cluster)
    assert given["service_account"] == "model-server" and given["kserve_version"] == "0.15.2"
    assert given["image_pull_secrets"] == ["registry-pull", "mirror-pull"]
    assert (given["min_replicas"], given["max_replicas"], given["memory_limit"]) == (2, 6, "4Gi")
    assert executors[f"exec-{cluster_name}"]["activeDeadlineSeconds"] == "1200"
    assert all(
        executors[f"exec-{name}"]["podMetadata"]["labels"]["kfp-torch-lifecycle/step"] == "deploy" for name in deploys
    )
    inputs = spec.root.input_definitions.parameters
    assert inputs["deploy_target"].default_value.string_value == "kserve"
    assert inputs["deploy_namespace"].default_value.string_value == ""  # nothing is deployed to a cluster
    assert inputs["deploy_target"].description and inputs["deploy_namespace"].description


def test_promote_pipeline_deploys_a_canary_then_promotes_it_or_deploys_directly(compiled):
    spec, executors = compiled["promote_pipeline"]
    assert spec.pipeline_info.name == "pytorch-promote"
    tasks = tasks_of(spec)
    assert set(tasks) == {"importer", "deploy", "deploy-2", "deploy-3"}
    importer = spec.deployment_spec.fields["executors"].struct_value.fields["exec-importer"]
    assert "importer" in json_format.MessageToDict(importer)
    by_role = {}
    for name in ("deploy", "deploy-2", "deploy-3"):
        task, conditions = tasks[name]
        given = constants(task)
        assert (
            task.inputs.artifacts["verified_deployment"].component_input_artifact
            == "pipelinechannel--importer-artifact"
        )
        assert task.inputs.parameters["image"].component_input_parameter.endswith("image")
        assert given["service_account"] == "model-server" and given["kserve_version"] == "0.15.2"
        role = "promote" if given.get("promote") else "direct" if given.get("production") else "canary"
        by_role[role] = (name, task, given, conditions)
    canary_name, canary, canary_given, canary_conditions = by_role["canary"]
    _, promoted, promoted_given, _ = by_role["promote"]
    _, _, direct_given, direct_conditions = by_role["direct"]
    assert canary.inputs.parameters["canary_percent"].component_input_parameter.endswith("canary_percent")
    assert list(promoted.dependent_tasks) == [canary_name]  # promoted only after the canary was verified
    assert promoted_given["production"] is True and not canary_given.get("production")
    assert direct_given["production"] is True and "promote" not in direct_given
    assert any("canary_percent" in c and "-1" in c for c in direct_conditions)
    assert canary_conditions and direct_conditions != canary_conditions
    for name in ("exec-deploy", "exec-deploy-2", "exec-deploy-3"):
        assert executors[name]["podMetadata"]["labels"]["kfp-torch-lifecycle/step"] == "deploy"
    inputs = spec.root.input_definitions.parameters
    assert {"image", "namespace", "verified_deployment", "target", "name", "canary_percent"} == set(inputs)
    assert all(parameter.description for parameter in inputs.values())


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"image": "registry.example.com/ml/image-classifier:v3"}, r"is not pinned by digest"),
        ({"namespace": "Prod"}, r"namespace 'Prod' is not a DNS-1123 label"),
        ({"target": "local"}, r"target must be one of kserve, deployment \(production is a cluster\)"),
        ({"canary_percent": 120}, r"canary_percent must be an integer from 0 to 100, or -1"),
        ({"verified_deployment": ""}, r"verified_deployment is required"),
        ({"name": "Image_Classifier"}, r"service name 'Image_Classifier' is not a DNS-1035 label"),
        ({"namespce": "prod"}, r"unknown argument\(s\) namespce"),
    ],
)
def test_promote_arguments_are_checked_before_a_run(arguments, message):
    good = {"image": IMAGE, "namespace": "prod", "verified_deployment": "minio://mlpipeline/v2/artifacts/x/deployment"}
    check_arguments(promote_pipeline, good)
    with pytest.raises(ValueError, match=message):
        check_arguments(promote_pipeline, {**good, **arguments})


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"deploy_target": "knative"}, r"deploy_target must be one of kserve, deployment, local, got 'knative'"),
        ({"deploy_target": "local", "deploy_namespace": "staging"}, r"deploy_target local serves on the machine"),
        ({"deploy_namespace": "Staging"}, r"deploy_namespace: namespace 'Staging' is not a DNS-1123 label"),
        ({"deploy_namespace": "staging"}, r"deploys the serving image, but none is built: give image_repository"),
        (
            {"deploy_namespace": "staging", "image_repository": "registry.example.com/ml/ic", "push_image": False},
            r"which the cluster pulls: push_image must be true",
        ),
    ],
)
def test_where_to_deploy_is_checked_before_a_run_and_by_the_first_step(arguments, message):
    with pytest.raises(ValueError, match=message):
        check_arguments(training_pipeline, {"repo_url": "https://github.com/you/data.git", **arguments})
    defaults = {name: spec.default for name, spec in training_pipeline.component_spec.inputs.items()}
    with pytest.raises(ValueError, match=message):  # what the check_arguments step runs
        check_values({**defaults, **arguments})


def test_good_places_to_deploy_pass():
    for arguments in (
        {},
        {"deploy_target": "local"},
        {"deploy_target": "deployment", "deploy_namespace": "staging", "image_repository": "registry.example.com/ic"},
    ):
        check_arguments(training_pipeline, {"repo_url": "https://github.com/you/data.git", **arguments})


@pytest.mark.parametrize(
    "text, message",
    [
        ("deploy: {min_replicas: 0}", r"deploy: min_replicas must be an integer >= 1, got 0"),
        ("deploy: {max_replicas: 1, min_replicas: 2}", r"max_replicas \(1\) is below min_replicas \(2\)"),
        ("deploy: {image_pull_secrets: registry-pull}", r"deploy.image_pull_secrets is a list of Secret names"),
        ("deploy: {image_pull_secrets: ['Bad Secret']}", r"image_pull_secrets names Secrets the namespace holds"),
        ("deploy: {kserve_mode: serverles}", r"kserve_mode 'serverles' is not one of"),
        ("deploy: {kserve_version: latest}", r"kserve_version 'latest' is not a KServe release"),
        ("deploy: {memory: 16K}", r"memory '16K' is not a Kubernetes quantity"),
        ("deploy: {verify_images: 0}", r"verify_images must be an integer >= 1, got 0"),
        ("deploy: {replicas: 2}", r"deploy: unknown setting\(s\) replicas; valid: cpu, "),
        ("steps: {deploy: {caching: true}}", r"steps.deploy.caching cannot be true: a cached deploy would skip"),
    ],
)
def test_bad_deploy_settings_fail_at_compile_time_naming_them(text, message):
    with pytest.raises(SettingsError, match=message):
        settings_from_dict(yaml.safe_load(text))


def test_the_deploy_step_has_its_own_defaults():
    own = DEFAULT_STEPS["deploy"]
    assert own.retries == 0 and own.caching is False and own.timeout_seconds >= 600


@pytest.fixture
def fake_kfp(monkeypatch, tmp_path):
    import kfp

    from pipelines import kfp_client
    from tests.support.fake_kfp import FakeKfp

    for name in ("KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "KFP_TOKEN_FILE", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kfp_client, "DEFAULT_SA_TOKEN_PATH", str(tmp_path / "no-such-token"))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-kfp-config" / "context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-pod-namespace"))
    with FakeKfp() as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        yield server
    assert server.violations == []


def test_promote_pipeline_is_run_and_scheduled_from_the_command_line(fake_kfp, tmp_path, capsys):
    from pipelines.cli import main

    compile_all(tmp_path)
    path = str(tmp_path / "promote_pipeline.yaml")
    given = ["--param", "namespace=prod"]
    given += ["--param", "verified_deployment=minio://mlpipeline/v2/artifacts/run-1/deploy/deployment"]
    tagged = [*given, "--param", "image=registry.example.com/ml/image-classifier:v3"]
    given += ["--param", f"image={IMAGE}"]
    assert main(["upload", path]) == 0
    assert main(["run", path, *given, "--param", "canary_percent=25"]) == 0
    (run,) = fake_kfp.runs.values()
    assert run["runtime_config"]["parameters"]["canary_percent"] == 25
    assert main(["schedule", "create", path, "--name", "weekly-promotion", "--cron", "0 6 * * 1", *given]) == 0
    # A tag instead of a digest is refused before anything is sent.
    assert main(["run", path, *tagged]) == 2
    assert "is not pinned by digest" in capsys.readouterr().err
    assert len(fake_kfp.runs) == 1


def test_the_step_refuses_a_held_back_model_and_local_with_a_namespace_or_a_canary(tmp_path):
    from components.common.kube.values import InvalidValue
    from components.deploy.inputs import NotPromoted, deploy_request, refuse_unpromoted

    refuse_unpromoted({"promote": True, "reason": "accuracy 0.97 >= 0.95"})
    refuse_unpromoted(None)  # not connected: nothing to check
    with pytest.raises(NotPromoted, match=r"evaluate did not promote this model \(accuracy 0.41 < 0.95\)"):
        refuse_unpromoted({"promote": False, "reason": "accuracy 0.41 < 0.95"})
    bento = str(tmp_path / "image-classifier.bento")
    with pytest.raises(InvalidValue, match=r"target local serves on this machine and takes no namespace, got 'prod'"):
        deploy_request("local", "image-classifier", namespace="prod", bento=bento)
    for extra in ({"canary_percent": 10}, {"promote": True}):
        with pytest.raises(InvalidValue, match=r"canaries and their promotion need a cluster target"):
            deploy_request("local", "image-classifier", bento=bento, **extra)
    request = deploy_request("deployment", "image-classifier", "staging", IMAGE, model_tag="image-classifier:m1")
    assert request.canary_percent is None and request.labels["kfp-torch-lifecycle/model-tag"] == "image-classifier.m1"
