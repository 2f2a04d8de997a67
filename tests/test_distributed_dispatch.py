"""The distributed pipeline's step picks the kind of job: the launcher given, its alias, or (auto) the kind the
cluster's API discovery lists, against the fake API server serving TrainJob, PyTorchJob, both or neither."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.check_arguments.checks import check_values
from components.common.distributed_step import ArtifactLocation
from components.common.kube.api import KubernetesApi, RetryPolicy
from components.common.kube.jobs import KubernetesJobClient
from components.distributed_train.dispatch import NoJobKind, resolve_launcher, run
from components.train.config import TrainConfig
from pipelines.distributed_training_pipeline import build_distributed_training_pipeline
from pipelines.kubernetes_settings import SettingsError, settings_from_dict
from tests.support.fake_kube import FakeKube
from tests.support.fake_pytorchjob import TrainingOperator
from tests.support.fake_trainjob import KubeflowTrainer


def served_by(*controllers):
    kube = FakeKube(list(controllers)).start()
    return kube, lambda: KubernetesApi(kube.api_client(), RetryPolicy(budget_seconds=2))


@pytest.mark.parametrize(
    "controllers, expected",
    [
        ((KubeflowTrainer, TrainingOperator), "trainjob"),  # both: TrainJob is preferred
        ((KubeflowTrainer,), "trainjob"),
        ((TrainingOperator,), "pytorchjob"),
    ],
)
def test_auto_picks_the_kind_the_cluster_serves(controllers, expected):
    kube, api = served_by(*(controller() for controller in controllers))
    try:
        assert resolve_launcher("auto", api) == expected
    finally:
        kube.stop()
    asked = {request.path for request in kube.requests}
    assert "/apis/trainer.kubeflow.org/v1alpha1" in asked
    assert all(request.access is None for request in kube.requests)  # discovery: no RBAC rule needed


def test_auto_on_a_cluster_with_neither_names_both_and_how_to_install_them():
    kube, api = served_by()
    try:
        with pytest.raises(NoJobKind) as raised:
            resolve_launcher("auto", api)
    finally:
        kube.stop()
    message = str(raised.value)
    assert "serves neither TrainJob (trainer.kubeflow.org/v1alpha1) nor PyTorchJob (kubeflow.org/v1)" in message
    assert "Install Kubeflow Trainer v2" in message and "Training Operator v1" in message


@pytest.mark.parametrize(
    "launcher, expected",
    [("kubeflow", "pytorchjob"), ("pytorchjob", "pytorchjob"), ("trainjob", "trainjob"), ("local", "local")],
)
def test_explicit_launchers_need_no_cluster(launcher, expected):
    assert resolve_launcher(launcher, api=lambda: pytest.fail("no discovery for an explicit launcher")) == expected


def run_auto(kube: FakeKube, digits_dir: Path, tmp_path: Path, shared: Path, job: dict):
    """The step with launcher auto against the fake cluster: one epoch of the digits, the model in ``shared``."""
    return run(
        launcher="auto",
        dataset=ArtifactLocation(str(digits_dir), str(digits_dir)),
        model=ArtifactLocation(str(tmp_path / "model"), str(shared)),
        job_output_path=str(tmp_path / "job"),
        train=TrainConfig(epochs=1),
        image="registry.example.com/train:1",
        job=job,
        step={"run_id": "r", "task_name": "distributed-train", "dataset_info": {}, "namespace": "team-a"}
        | {"poll_seconds": 0.05, "queue_timeout_seconds": 60},
        api=lambda: KubernetesApi(kube.api_client()),
        clients=lambda kind: KubernetesJobClient(kube.api_client(), kind),
    )


def test_auto_runs_a_trainjob_and_collects_its_model(digits_dir, one_epoch_model, tmp_path):
    shared = one_epoch_model
    trainer, operator = KubeflowTrainer(), TrainingOperator()
    kube = FakeKube([trainer, operator]).start()
    try:
        result = run_auto(
            kube, digits_dir, tmp_path, shared, {"nproc_per_node": 1, "num_workers": 2, "trainer_release": "2.3"}
        )
    finally:
        kube.stop()
    assert result.spec is not None and len(trainer.created) == 1 and not operator.created
    assert json.loads((tmp_path / "job").read_text())["kind"] == "TrainJob"


def test_a_pytorchjob_takes_the_settings_it_has_from_the_components_parameters(digits_dir, one_epoch_model, tmp_path):
    shared = one_epoch_model
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    job = {"nproc_per_node": 1, "num_workers": 3, "cpu": "1", "memory": "2Gi", "shm_size": "1Gi"}
    job |= {"queue_name": "gpu-queue", "trainer_release": "2.1", "command": ["ignored"], "image": ""}  # not its own
    try:
        run_auto(kube, digits_dir, tmp_path, shared, job)
    finally:
        kube.stop()
    (created,) = operator.created
    replicas = created.body["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    (container,) = replicas["Master"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/train:1"
    assert container["command"] == ["python", "-m", "components.train.cli"]  # the library's, not the job's "command"
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert "kueue.x-k8s.io/queue-name" not in created.body["metadata"].get("labels", {})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"launcher": "slurm"}, r"launcher must be one of auto, trainjob, pytorchjob, local, kubeflow"),
        ({"launcher": "auto", "queue_name": "a queue"}, r"queue_name must be a Kueue LocalQueue's name"),
        ({"launcher": "auto", "queue_timeout_seconds": 0}, r"queue_timeout_seconds must be > 0 seconds"),
    ],
)
def test_bad_launcher_values_fail_in_check_arguments(values, message):
    with pytest.raises(ValueError, match=message):
        check_values(values)


@pytest.mark.parametrize("launcher", ["auto", "trainjob", "pytorchjob", "kubeflow", "local"])
def test_every_launcher_passes_check_arguments(launcher):
    check_values({"launcher": launcher, "queue_name": "gpu-queue", "queue_timeout_seconds": 60})


# --- the Trainer release and runtime are cluster settings -------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trainer_release": "2.0"}, r"trainer_release must be one of 2.3, 2.1"),
        ({"trainjob_runtime": "Torch"}, r"trainjob_runtime must be a runtime's name"),
        ({"trainjob_runtime_kind": "JobSet"}, r"trainjob_runtime_kind must be one of ClusterTrainingRuntime"),
    ],
)
def test_bad_trainer_settings_fail_at_compile_time(data, message):
    with pytest.raises(SettingsError, match=message):
        settings_from_dict(data)


def test_settings_files_for_the_steps_earlier_name_still_work():
    settings = settings_from_dict({"steps": {"pytorchjob-train": {"retries": 5}}})
    assert settings.steps["distributed-train"].retries == 5


def test_the_compiled_pipeline_hands_the_step_the_clusters_trainer_settings():
    settings = settings_from_dict({"trainer_release": "2.1", "trainjob_runtime": "team-torch",
                                   "trainjob_runtime_kind": "TrainingRuntime"})  # fmt: skip
    spec = build_distributed_training_pipeline(settings).pipeline_spec
    parameters = spec.root.dag.tasks["distributed-train"].inputs.parameters
    constants = {
        name: parameters[name].runtime_value.constant.string_value
        for name in ("trainer_release", "runtime", "runtime_kind")
    }
    assert constants == {"trainer_release": "2.1", "runtime": "team-torch", "runtime_kind": "TrainingRuntime"}
    assert parameters["launcher"].component_input_parameter == "launcher"
    assert spec.root.input_definitions.parameters["launcher"].default_value.string_value == "auto"
