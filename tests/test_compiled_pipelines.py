"""The compiled YAML: strict protobuf parses, per-step Kubernetes settings where asked, no secrets."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

from components.check_arguments.checks import GPU_NODE_SELECTOR, GPU_TOLERATIONS, train_placement
from pipelines.compile import BUILDERS, compile_all
from pipelines.kubernetes_settings import (
    DEFAULT_STEPS,
    STEPS,
    ClusterSettings,
    SettingsError,
    load_settings,
    settings_from_dict,
)
from tests.support.compiled_yaml import parse_strictly

SECRET_SENTINEL = "-----BEGIN PRIVATE KEY----- sentinel-do-not-leak"

CLUSTER_SETTINGS = """
pod_labels:
  team: vision
  cost-center: ml-42
shm_size: 8Gi
dvc_cache_pvc: dvc-cache
gcs_credentials_secret: gcs-reader
registry_secret: registry-push
model_registry: mlflow
model_registry_url: https://mlflow.example.com
model_registry_credentials_secret: mlflow-credentials
steps:
  train:
    cpu_request: "6"
    memory_limit: 48Gi
    retries: 2
    backoff_duration: 2m
    timeout_seconds: 7200
  containerize:
    caching: false
"""


@pytest.fixture(scope="module")
def default_yaml(tmp_path_factory) -> dict[str, Path]:
    return {path.stem: path for path in compile_all(tmp_path_factory.mktemp("default"))}


@pytest.fixture(scope="module")
def cluster_yaml(tmp_path_factory) -> dict[str, Path]:
    settings = tmp_path_factory.mktemp("settings") / "cluster.yaml"
    settings.write_text(CLUSTER_SETTINGS)
    return {path.stem: path for path in compile_all(tmp_path_factory.mktemp("cluster"), settings_path=settings)}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_compiled_pipeline_parses_strictly(default_yaml, cluster_yaml, name):
    for compiled in (default_yaml, cluster_yaml):
        spec, executors = parse_strictly(compiled[name])
        assert spec.pipeline_info.name.startswith("pytorch-")
        deployed = json_format.MessageToDict(spec.deployment_spec)["executors"]
        # Every step with a pod has its Kubernetes settings; an importer (promote_pipeline's) runs no pod.
        assert set(executors) == {name for name, executor in deployed.items() if "container" in executor}


def test_compiling_twice_gives_identical_bytes(tmp_path, default_yaml):
    again = compile_all(tmp_path)
    for path in again:
        assert path.read_bytes() == default_yaml[path.stem].read_bytes()


def test_separate_compiler_processes_give_identical_bytes(tmp_path, default_yaml):
    """protobuf (upb) orders Struct maps differently in each process; KFP's header comment showed it."""
    for run in range(3):
        out = tmp_path / str(run)
        subprocess.run(
            [sys.executable, "-m", "pipelines.compile", "--output-dir", str(out)], check=True, capture_output=True
        )
        for name, path in default_yaml.items():
            assert (out / path.name).read_bytes() == path.read_bytes(), f"{name} differs in process {run}"


def executor_resources(spec: pipeline_spec_pb2.PipelineSpec, executor: str) -> dict:
    deployment = json_format.MessageToDict(spec.deployment_spec)
    return deployment["executors"][executor]["container"]["resources"]


def test_the_train_step_takes_gpus_accelerator_node_selector_and_tolerations_from_parameters(default_yaml):
    spec, executors = parse_strictly(default_yaml["training_pipeline"])
    accelerator = executor_resources(spec, "exec-train")["accelerator"]
    assert "pipelinechannel--gpus" in accelerator["resourceCount"]
    assert "pipelinechannel--accelerator_type" in accelerator["resourceType"]
    train = executors["exec-train"]
    # Placed by the check-arguments step, which drops the GPU defaults when gpus=0 (see checks.train_placement).
    placement = {"producerTask": "check-arguments"}
    assert train["nodeSelector"] == {
        "nodeSelectorJson": {"taskOutputParameter": {**placement, "outputParameterKey": "node_selector"}}
    }
    assert train["tolerations"] == [
        {"tolerationJson": {"taskOutputParameter": {**placement, "outputParameterKey": "tolerations"}}}
    ]
    check = spec.root.dag.tasks["check-arguments"].inputs.parameters
    assert check["node_selector"].component_input_parameter == "node_selector"
    assert check["tolerations"].component_input_parameter == "tolerations"
    assert check["gpus"].component_input_parameter == "gpus"
    assert train["emptyDirMounts"] == [
        {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "2Gi"}
    ]
    inputs = spec.root.input_definitions.parameters
    assert json_format.MessageToDict(inputs["node_selector"].default_value) == {"nvidia.com/gpu.present": "true"}
    assert inputs["gpus"].default_value.number_value == 1
    # Nothing but the training step asks for a GPU or the GPU nodes.
    for name, config in executors.items():
        if name != "exec-train":
            assert "nodeSelector" not in config and "tolerations" not in config and "emptyDirMounts" not in config
            assert "accelerator" not in executor_resources(spec, name)


def test_the_seed_tutorials_gpu_label_style_is_expressible_at_run_time():
    from pipelines.arguments import check_arguments
    from pipelines.training_pipeline import training_pipeline

    arguments = {"repo_url": "https://example.com/data.git", "node_selector": {"gpu": "true"}, "tolerations": []}
    assert check_arguments(training_pipeline, arguments) is None  # accepted, as the tutorials label their nodes
    with pytest.raises(ValueError, match=r"node_selector\['gpu'\] must be a string such as \"true\", got True"):
        check_arguments(training_pipeline, {**arguments, "node_selector": {"gpu": True}})


def test_the_cache_key_of_dvc_pull_and_after_holds_the_resolved_commit(default_yaml):
    spec, _ = parse_strictly(default_yaml["training_pipeline"])
    tasks = spec.root.dag.tasks
    assert tasks["resolve-revision"].caching_options.enable_cache is False
    rev = tasks["dvc-pull"].inputs.parameters["rev"].task_output_parameter
    assert (rev.producer_task, rev.output_parameter_key) == ("resolve-revision", "Output")
    assert tasks["dvc-pull"].caching_options.enable_cache is True
    assert tasks["train"].inputs.artifacts["dataset"].task_output_artifact.producer_task == "dvc-pull"


def step_of(executor: str) -> str:
    """The step an executor runs: ``exec-report-3`` (a step used on several paths) runs ``report``."""
    return re.sub(r"-\d+$", "", executor.removeprefix("exec-"))


def test_default_settings_give_every_step_its_own_resources_retries_timeout_and_labels(default_yaml):
    """Each step gets exactly its own defaults: one step given another's CPU, memory, timeout or retries fails."""
    seen = set()
    for name in BUILDERS:
        spec, executors = parse_strictly(default_yaml[name])
        tasks = _all_tasks(spec)
        for executor, config in executors.items():
            task, step = executor.removeprefix("exec-"), step_of(executor)
            own = DEFAULT_STEPS[step]
            seen.add(step)
            assert config["podMetadata"]["labels"] == {
                "app.kubernetes.io/part-of": "kfp-torch-lifecycle",
                "kfp-torch-lifecycle/step": step,
            }
            assert int(config["activeDeadlineSeconds"]) == own.timeout_seconds, step
            resources = executor_resources(spec, executor)
            assert (
                resources["resourceCpuRequest"],
                resources["resourceCpuLimit"],
                resources["resourceMemoryRequest"],
                resources["resourceMemoryLimit"],
            ) == (own.cpu_request, own.cpu_limit, own.memory_request, own.memory_limit), step
            # Only the artifact store's Secret by default, and only where artifacts are read by URI.
            secrets = [volume["secretName"] for volume in config.get("secretAsVolume", [])]
            by_uri = step in ("distributed-train", "find-baseline")
            assert secrets == (["mlpipeline-minio-artifact"] if by_uri else []), step
            assert "pvcMount" not in config
            retry = tasks[task].retry_policy
            assert retry.max_retry_count == own.retries, step
            if own.retries:
                assert f"{retry.backoff_duration.seconds}s" == own.backoff_duration, step
                assert retry.backoff_factor == own.backoff_factor, step
            assert tasks[task].caching_options.enable_cache is own.caching, step
    assert seen == set(DEFAULT_STEPS)
    # Retried by KFP only where a lost pod can fail them; the others retry the system's errors themselves.
    assert {step for step, own in DEFAULT_STEPS.items() if own.retries} == {"train", "distributed-train"}
    # Never from KFP's cache: the branch's commit, the version in production, a registration in the registry.
    uncached = {step for step, own in DEFAULT_STEPS.items() if not own.caching}
    assert uncached == {"resolve-revision", "find-baseline", "register", "deploy"}


def _all_tasks(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, pipeline_spec_pb2.PipelineTaskSpec]:
    """Every task by its name in the DAG, inside conditions too."""
    tasks = dict(spec.root.dag.tasks)
    for component in spec.components.values():
        if component.HasField("dag"):
            tasks.update(component.dag.tasks)
    return tasks


def test_cluster_settings_land_exactly_on_the_steps_they_are_for(cluster_yaml):
    spec, executors = parse_strictly(cluster_yaml["training_pipeline"])
    for config in executors.values():
        labels = config["podMetadata"]["labels"]
        assert labels["team"] == "vision" and labels["cost-center"] == "ml-42"
        assert labels["app.kubernetes.io/part-of"] == "kfp-torch-lifecycle" and "kfp-torch-lifecycle/step" in labels
    [pvc] = executors["exec-dvc-pull"]["pvcMount"]
    assert (pvc["constant"], pvc["mountPath"]) == ("dvc-cache", "/mnt/dvc-cache")
    secrets = {
        name: [volume["secretName"] for volume in config.get("secretAsVolume", [])]
        for name, config in executors.items()
    }
    assert secrets["exec-dvc-pull"] == ["gcs-reader"]
    assert secrets["exec-containerize"] == ["registry-push"]
    assert secrets["exec-register"] == ["mlflow-credentials"]
    assert sorted(secrets["exec-find-baseline"]) == ["gcs-reader", "mlflow-credentials", "mlpipeline-minio-artifact"]
    deploys = [name for name in secrets if step_of(name) == "deploy"]
    assert deploys and all(secrets[name] == ["mlflow-credentials"] for name in deploys)  # it marks what serves
    elsewhere = ("exec-dvc-pull", "exec-containerize", "exec-register", "exec-find-baseline", *deploys)
    assert all(not names for name, names in secrets.items() if name not in elsewhere)
    assert [m for n, c in executors.items() for m in c.get("pvcMount", []) if n != "exec-dvc-pull"] == []
    assert executors["exec-train"]["emptyDirMounts"][0]["sizeLimit"] == "8Gi"
    assert executors["exec-train"]["activeDeadlineSeconds"] == "7200"

    deployment = json_format.MessageToDict(spec.deployment_spec)["executors"]
    pull_env = {e["name"]: e["value"] for e in deployment["exec-dvc-pull"]["container"].get("env", [])}
    assert pull_env == {"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcs/key.json"}
    registry_env = {
        "KFP_TORCH_REGISTRY": "mlflow",
        "KFP_TORCH_REGISTRY_URL": "https://mlflow.example.com",
        "KFP_TORCH_REGISTRY_MODEL_NAME": "image-classifier",
        "KFP_TORCH_REGISTRY_CREDENTIALS_DIR": "/var/secrets/model-registry",
        "KFP_TORCH_REGISTRY_SERVING_ENVIRONMENT": "production",
        "KFP_TORCH_REGISTRY_EXPERIMENT": "kfp-torch-lifecycle",
    }
    for executor in ("exec-find-baseline", "exec-register", *deploys):
        env = {e["name"]: e["value"] for e in deployment[executor]["container"]["env"]}
        assert {name: value for name, value in env.items() if name.startswith("KFP_TORCH_REGISTRY")} == registry_env
    registry_steps = {
        name
        for name, executor in deployment.items()
        for e in executor["container"].get("env", [])
        if e["name"] == "KFP_TORCH_REGISTRY"
    }
    assert registry_steps == {"exec-find-baseline", "exec-register", *deploys}
    inputs = spec.root.input_definitions.parameters
    assert inputs["baseline"].default_value.string_value == "production"  # the cluster has a registry
    train = deployment["exec-train"]["container"]["resources"]
    assert train["resourceCpuRequest"] == "6" and train["resourceMemoryLimit"] == "48Gi"

    tasks = _all_tasks(spec)
    assert tasks["train"].retry_policy.max_retry_count == 2
    assert tasks["train"].retry_policy.backoff_duration.seconds == 120
    assert tasks["containerize"].caching_options.enable_cache is False
    assert tasks["containerize"].inputs.parameters["registry_auth_file"].runtime_value.constant.string_value == (
        "/var/secrets/registry/.dockerconfigjson"
    )
    assert tasks["dvc-pull"].inputs.parameters["cache_dir"].runtime_value.constant.string_value == "/mnt/dvc-cache"


def test_the_distributed_pipeline_hands_the_gcs_secret_to_the_pytorchjob_replicas(cluster_yaml):
    spec, executors = parse_strictly(cluster_yaml["distributed_training_pipeline"])
    mounted = {v["secretName"]: v for v in executors["exec-distributed-train"]["secretAsVolume"]}
    assert sorted(mounted) == ["gcs-reader", "mlpipeline-minio-artifact"]
    assert mounted["gcs-reader"].get("optional", False) is False
    task = _all_tasks(spec)["distributed-train"]
    secret_volumes = json_format.MessageToDict(task.inputs.parameters["secret_volumes"].runtime_value.constant)
    assert secret_volumes == {"gcs-reader": "/var/secrets/gcs"}


def _replica_settings(spec) -> tuple[dict, dict, dict]:
    """The distributed-train step's own environment, and the env and optional Secrets it gives its replicas."""
    deployment = json_format.MessageToDict(spec.deployment_spec)["executors"]
    step_env = {e["name"]: e["value"] for e in deployment["exec-distributed-train"]["container"].get("env", [])}
    parameters = _all_tasks(spec)["distributed-train"].inputs.parameters
    replica_env = json_format.MessageToDict(parameters["env"].runtime_value.constant)
    optional = json_format.MessageToDict(parameters["optional_secret_volumes"].runtime_value.constant)
    return step_env, replica_env, optional


def test_the_artifact_stores_secret_reaches_the_pytorchjob_step_and_its_replicas_by_name_only(default_yaml):
    spec, executors = parse_strictly(default_yaml["distributed_training_pipeline"])
    [mounted] = executors["exec-distributed-train"]["secretAsVolume"]
    # Optional: a namespace without KFP's Secret (a gs:// root, IRSA) still starts the pod.
    assert mounted == {
        "secretName": "mlpipeline-minio-artifact",
        "mountPath": "/var/secrets/artifact-store",
        "optional": True,
        "secretNameParameter": {"runtimeValue": {"constant": "mlpipeline-minio-artifact"}},
    }
    step_env, replica_env, optional = _replica_settings(spec)
    expected_env = {"KFP_TORCH_S3_CREDENTIALS_DIR": "/var/secrets/artifact-store"}
    assert step_env == replica_env == expected_env
    assert optional == {"mlpipeline-minio-artifact": "/var/secrets/artifact-store"}
    only_there = {n for n, c in executors.items() if c.get("secretAsVolume")}
    assert only_there == {"exec-distributed-train", "exec-find-baseline"}  # find-baseline copies a model by URI
    assert executors["exec-find-baseline"]["secretAsVolume"] == [mounted]


def test_the_artifact_store_settings_set_the_endpoint_and_region_or_nothing(tmp_path):
    from pipelines.distributed_training_pipeline import build_distributed_training_pipeline

    settings = settings_from_dict(
        {"artifact_store_endpoint": "http://seaweedfs.kubeflow:8333", "artifact_store_region": "us-east-1"}
    )
    path = tmp_path / "seaweedfs.yaml"
    compiler.Compiler().compile(build_distributed_training_pipeline(settings), str(path))
    spec, _ = parse_strictly(path)
    step_env, replica_env, _ = _replica_settings(spec)
    assert (
        step_env
        == replica_env
        == {
            "KFP_TORCH_S3_CREDENTIALS_DIR": "/var/secrets/artifact-store",
            "KFP_TORCH_S3_ENDPOINT": "http://seaweedfs.kubeflow:8333",
            "KFP_TORCH_S3_REGION": "us-east-1",
        }
    )

    path = tmp_path / "none.yaml"
    compiler.Compiler().compile(
        build_distributed_training_pipeline(settings_from_dict({"artifact_store_secret": ""})), str(path)
    )
    spec, executors = parse_strictly(path)
    assert "secretAsVolume" not in executors["exec-distributed-train"]
    assert _replica_settings(spec) == ({}, {}, {})


def test_images_are_pinned_to_the_library_version_and_nothing_is_installed_at_start(default_yaml):
    from components import __version__

    for path in default_yaml.values():
        spec, _ = parse_strictly(path)
        for name, executor in json_format.MessageToDict(spec.deployment_spec)["executors"].items():
            if "importer" in executor:
                continue  # promote_pipeline's importer: KFP's driver runs it, no image
            container = executor["container"]
            assert container["image"].endswith(f":{__version__}"), name
            assert "pip install" not in " ".join(container["command"] + container.get("args", [])), name


def test_no_secret_value_or_credential_file_content_reaches_the_yaml(tmp_path, monkeypatch):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "private_key": SECRET_SENTINEL}))
    auth = tmp_path / "auth.json"
    auth.write_text('{"auths": {"registry.example.com": {"auth": "dXNlcjpodW50ZXIy"}}}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    monkeypatch.setenv("KFP_TOKEN", SECRET_SENTINEL)
    # The model registry's credentials, in every place the registry steps may find them at run time.
    mounted = tmp_path / "model-registry"
    mounted.mkdir()
    (mounted / "token").write_text(SECRET_SENTINEL)
    monkeypatch.setenv("KFP_TORCH_REGISTRY_CREDENTIALS_DIR", str(mounted))
    for variable in ("KFP_TORCH_REGISTRY_TOKEN", "KFP_TORCH_REGISTRY_PASSWORD", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(variable, SECRET_SENTINEL)
    settings = tmp_path / "cluster.yaml"
    settings.write_text(CLUSTER_SETTINGS)
    compiled = [*compile_all(tmp_path / "default"), *compile_all(tmp_path / "cluster", settings_path=settings)]
    for path in compiled:
        text = path.read_text()
        for secret in ("sentinel", "BEGIN PRIVATE KEY", "dXNlcjpodW50ZXIy", str(key), str(auth), str(mounted)):
            assert secret not in text, f"{secret} leaked into {path}"
    # The registry's Secret reaches the YAML by name and mount path only.
    assert "mlflow-credentials" in compiled[-1].read_text() and "/var/secrets/model-registry" in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gpu_count": 1}, r"unknown setting\(s\) gpu_count; valid settings: .*shm_size"),
        ({"steps": {"training": {}}}, r"unknown step 'training'; the steps are .*train"),
        (
            {"steps": {"train": {"cpu_request": "four"}}},
            r"steps.train.cpu_request must be a Kubernetes quantity.*'four'",
        ),
        ({"steps": {"train": {"retries": -1}}}, r"steps.train.retries must be an integer >= 0, got -1"),
        ({"steps": {"train": {"backoff_duration": "soon"}}}, r"duration like '30s'.*'soon'"),
        ({"steps": {"resolve-revision": {"caching": True}}}, r"serve an old commit"),
        ({"steps": {"train": {"gpus": 2}}}, r"steps.train: unknown setting\(s\) \['gpus'\]"),
        ({"pod_labels": {"team": "vision team"}}, r"pod label team='vision team'"),
        ({"pod_labels": {"/team": "vision"}}, r"pod label key '/team' is not a valid Kubernetes label key"),
        ({"dvc_cache_pvc": "DVC_Cache"}, r"dvc_cache_pvc 'DVC_Cache' is not a valid Kubernetes object name"),
        ({"shm_size": "lots"}, r"shm_size must be a quantity"),
        ({"shm_size": "5Gi5"}, r"shm_size must be a quantity.*'5Gi5'"),
        ({"steps": {"train": {"memory_request": "16K"}}}, r"memory_request must be a Kubernetes quantity.*'16K'"),
        ({"steps": {"train": {"cpu_limit": "1mm"}}}, r"cpu_limit must be a Kubernetes quantity.*'1mm'"),
        ({"steps": {"train": {"cpu_limit": "-1"}}}, r"cpu_limit must be a Kubernetes quantity.*'-1'"),
        ({"artifact_store_secret": "Minio_Secret"}, r"artifact_store_secret 'Minio_Secret' is not a valid"),
        ({"artifact_store_mount_path": "secrets"}, r"artifact_store_mount_path must be an absolute path"),
        ({"artifact_store_endpoint": "minio-service:9000"}, r"artifact_store_endpoint must be an http\(s\) URL"),
        ({"artifact_store_endpoint": "http://user:pw@minio:9000"}, r"without credentials"),
        ({"artifact_store_region": "US East"}, r"artifact_store_region must be a region name.*'US East'"),
        ({"steps": {"find-baseline": {"caching": True}}}, r"may no longer serve in production"),
        ({"steps": {"record-promotion": {}}}, r"unknown step 'record-promotion'; the steps are .*register"),
        ({"model_registry": "wandb"}, r"model_registry must be one of none, mlflow, kubeflow, got 'wandb'"),
        ({"model_registry": "mlflow"}, r"model_registry=mlflow needs model_registry_url"),
        (
            {"model_registry": "mlflow", "model_registry_url": "https://u:pw@mlflow.example.com"},
            r"model_registry_url carries a user or password \(https://\*\*\*@mlflow.example.com\)",
        ),
        ({"model_registry": "mlflow", "model_registry_url": "mlflow:5000"}, r"give the registry's http:// or https://"),
        ({"model_registry_model_name": "my model"}, r"model_registry_model_name='my model'"),
        ({"model_registry_credentials_secret": "MLflow"}, r"model_registry_credentials_secret 'MLflow' is not a valid"),
        ({"model_registry_ca_file": "ca.crt"}, r"model_registry_ca_file must be an absolute path inside the pod"),
        (
            {"model_registry_credentials_secret": "c", "model_registry_credentials_mount_path": "/var/secrets/gcs"},
            r"model_registry_credentials_mount_path must differ",
        ),
    ],
)
def test_bad_settings_fail_at_compile_time_naming_the_value(settings, message):
    with pytest.raises(SettingsError, match=message):
        settings_from_dict(settings)


def test_a_settings_file_that_is_not_yaml_is_named(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("steps: [unclosed")
    with pytest.raises(SettingsError, match=str(bad)):
        load_settings(bad)


def test_defaults_are_valid_and_cover_every_step():
    settings = ClusterSettings()
    settings.validate()  # raises on any bad default
    assert set(settings.steps) == set(STEPS)
    assert settings_from_dict({}) == settings  # an empty file means the defaults


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"gpus": -1}, r"gpus must be an integer >= 0, got -1"),
        ({"accelerator_type": "gpu"}, r"accelerator_type must be an extended resource name like 'nvidia.com/gpu'"),
        ({"node_selector": {"gpu": 1}}, r"node_selector"),
        ({"tolerations": [{"operator": "Sometimes"}]}, r"tolerations\[0\].operator must be one of Exists, Equal"),
        ({"baseline": "latest"}, r"baseline='latest': give 'production' .*, 'none', or a model's URI"),
        ({"baseline": "models/m"}, r"baseline='models/m'"),  # a relative path means nothing in a pod
    ],
)
def test_bad_gpu_placement_arguments_fail_before_submission(arguments, message):
    from pipelines.arguments import check_arguments
    from pipelines.training_pipeline import training_pipeline

    with pytest.raises(ValueError, match=message):
        check_arguments(training_pipeline, {"repo_url": "https://example.com/data.git", **arguments})


def test_the_documented_example_settings_compile(tmp_path):
    example = Path(__file__).resolve().parents[1] / "pipelines/cluster_settings.example.yaml"
    settings = load_settings(example)
    assert settings.steps["train"].memory_limit == "64Gi" and settings.dvc_cache_pvc == "dvc-cache"
    assert settings.model_registry == "mlflow" and settings.default_baseline == "production"
    documented = {line.split(":")[0] for line in example.read_text().splitlines() if line and line[0].isalpha()}
    assert documented <= {f.name for f in dataclasses.fields(ClusterSettings)}
    assert {f.name for f in dataclasses.fields(ClusterSettings) if f.name.startswith("model_registry")} <= documented
    for path in compile_all(tmp_path, settings=settings):
        parse_strictly(path)


@pytest.mark.parametrize(
    "gpus, node_selector, tolerations, placed",
    [
        (1, GPU_NODE_SELECTOR, GPU_TOLERATIONS, (GPU_NODE_SELECTOR, GPU_TOLERATIONS)),
        (0, GPU_NODE_SELECTOR, GPU_TOLERATIONS, ({}, [])),  # a CPU-only cluster: nothing to wait for
        (0, {"pool": "cpu"}, GPU_TOLERATIONS, ({"pool": "cpu"}, [])),  # the user's own selector is kept
        (0, GPU_NODE_SELECTOR, [{"key": "spot", "operator": "Exists"}], ({}, [{"key": "spot", "operator": "Exists"}])),
    ],
)
def test_without_gpus_the_train_step_drops_only_the_gpu_defaults(gpus, node_selector, tolerations, placed):
    assert train_placement(gpus, node_selector, tolerations) == placed


def test_every_step_of_both_pipelines_runs_after_the_argument_check(default_yaml):
    for name in ("training_pipeline", "distributed_training_pipeline"):  # promote_pipeline's steps check their own
        spec, _ = parse_strictly(default_yaml[name])
        tasks = spec.root.dag.tasks
        assert list(tasks["resolve-revision"].dependent_tasks) == ["check-arguments"]
        assert not tasks["check-arguments"].dependent_tasks


def test_the_baseline_is_found_after_the_argument_check_and_handed_to_evaluate(default_yaml):
    for name in ("training_pipeline", "distributed_training_pipeline"):  # promote_pipeline evaluates nothing
        spec, _ = parse_strictly(default_yaml[name])
        tasks = spec.root.dag.tasks
        assert list(tasks["find-baseline"].dependent_tasks) == ["check-arguments"]
        assert tasks["find-baseline"].inputs.parameters["baseline"].component_input_parameter == "baseline"
        assert tasks["check-arguments"].inputs.parameters["baseline"].component_input_parameter == "baseline"
        given = tasks["evaluate"].inputs.artifacts["baseline_model"].task_output_artifact
        assert (given.producer_task, given.output_artifact_key) == ("find-baseline", "baseline_model")
        # Without a model registry there is no production version to find: the default compares with nothing.
        assert spec.root.input_definitions.parameters["baseline"].default_value.string_value == "none"
        assert spec.root.input_definitions.parameters["baseline"].description.startswith("What evaluate compares")


def test_a_kubeflow_registry_without_a_secret_gets_its_address_and_no_volume(tmp_path):
    from pipelines.training_pipeline import build_training_pipeline

    path = tmp_path / "kubeflow.yaml"
    compiler.Compiler().compile(build_training_pipeline(settings_from_dict({"model_registry": "kubeflow"})), str(path))
    spec, executors = parse_strictly(path)
    env = {
        e["name"]: e["value"]
        for e in json_format.MessageToDict(spec.deployment_spec)["executors"]["exec-register"]["container"]["env"]
    }
    assert env["KFP_TORCH_REGISTRY"] == "kubeflow"
    assert env["KFP_TORCH_REGISTRY_URL"] == "http://model-registry-service.kubeflow.svc.cluster.local:8080"
    assert "KFP_TORCH_REGISTRY_CREDENTIALS_DIR" not in env  # the pod's ServiceAccount token is used
    assert "secretAsVolume" not in executors["exec-register"]
    assert spec.root.input_definitions.parameters["baseline"].default_value.string_value == "production"


def _paths(spec, component: str, conditions: tuple = ()) -> list[tuple[tuple, list[str]]]:
    """Every way through a DAG's conditions: the conditions taken and the tasks run, in the compiled spec."""
    tasks = spec.components[component].dag.tasks if component != "root" else spec.root.dag.tasks
    plain = sorted(name for name, task in tasks.items() if not task.component_ref.name.startswith("comp-condition"))
    nested = [task for task in tasks.values() if task.component_ref.name.startswith("comp-condition")]
    ways = [(conditions, plain)]
    for task in nested:
        if task.component_ref.name.startswith("comp-condition-branches"):  # If/Elif/Else: exactly one branch runs
            branches = spec.components[task.component_ref.name].dag.tasks.values()
            options = []
            for branch in branches:
                taken = (*conditions, branch.trigger_policy.condition)
                options += _paths(spec, branch.component_ref.name, taken)
            ways = [(c + o_c[len(c) :], t + o_t) for c, t in ways for o_c, o_t in options]
        else:
            raise AssertionError(f"a bare dsl.If without an Else: {task.component_ref.name}")
    return ways


def test_every_way_through_the_gate_ends_in_one_report_with_what_that_way_made(default_yaml):
    for name in ("training_pipeline", "distributed_training_pipeline"):
        spec, _ = parse_strictly(default_yaml[name])
        tasks = _all_tasks(spec)
        ways = _paths(spec, "root")
        # held back; promoted without an image (build off, or no repository), each deployed locally or not; an
        # image built, then deployed locally, to deploy_namespace, or not at all
        assert len(ways) == 8
        for conditions, ran in ways:
            [report] = [task for task in ran if step_of(task) == "report"]
            inputs = tasks[report].inputs
            promoted = "registered" in str(inputs.artifacts)
            deployed = [task for task in ran if step_of(task) == "deploy"]
            expected = ["bento", "comparison", "registration", "worst_images"] if promoted else []
            expected = expected or ["comparison", "worst_images"]
            assert sorted(inputs.artifacts) == sorted(expected + (["deployment"] if deployed else [])), conditions
            if deployed:
                (deploy,) = deployed
                channel = inputs.artifacts["deployment"]
                source = channel.task_output_artifact
                assert (source.producer_task, source.output_artifact_key) == (deploy, "deployment"), conditions
            built = "containerize" in ran
            assert ("image" in inputs.parameters) is built, conditions
            if built:
                image = inputs.parameters["image"]
                assert image.component_input_parameter == "pipelinechannel--containerize-Output", conditions
            assert ("register" in ran) is promoted and ("build-bento" in ran) is promoted, conditions
            assert tasks[report].task_info.name == "report"
        reports = sorted(task for task in tasks if step_of(task) == "report")
        assert reports == ["report", *(f"report-{n}" for n in range(2, 9))]
