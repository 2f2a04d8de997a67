"""What runs without a GPU imports no torch: compiling the pipelines, checking arguments, the CLI, the small
pod that launches a PyTorchJob and only talks to the Kubernetes API, and the steps that only read a model's
files (find_baseline, register, deploy, report: each would pay for torch's import in every run). Each is run
in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.fake_kube import FakeKube
from tests.support.fake_pytorchjob import TrainingOperator
from tests.support.fake_trainjob import KubeflowTrainer
from tests.support.launcher_pod import HEAVY_MODULES, LAUNCHER_POD, NAMESPACE, launcher_pod, prepare

REPORT = f"import sys; print(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))"


def heavy_modules_after(code: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize(
    "module",
    [
        "pipelines.cli",
        "pipelines.training_pipeline",
        "pipelines.distributed_training_pipeline",
        "pipelines.arguments",
        "components.check_arguments.checks",
        "components.pytorchjob_train.component",
        "components.pytorchjob_train.step",
        "components.trainjob_train.component",
        "components.trainjob_train.step",
        "components.distributed_train.component",
        "components.distributed_train.dispatch",
        "components.train.config",
        "components.find_baseline.baseline",
        "components.register.register",
        "components.deploy.step",
        "components.report.step",
    ],
)
def test_importing_loads_no_torch(module):
    assert heavy_modules_after(f"import {module}") == []


def test_compiling_every_pipeline_and_component_loads_no_torch(tmp_path):
    arguments = ["compile", "--output-dir", str(tmp_path / "p"), "--components-dir", str(tmp_path / "c")]
    compile_all = (
        f"import runpy, sys\nsys.argv = {arguments!r}\nrunpy.run_module('pipelines.compile', run_name='__main__')"
    )
    assert heavy_modules_after(compile_all) == []
    assert (tmp_path / "p" / "distributed_training_pipeline.yaml").is_file()
    assert (tmp_path / "c" / "pytorchjob_train.yaml").is_file()


def test_checking_the_arguments_loads_no_torch():
    check = (
        "from components.check_arguments.checks import check_values\n"
        "check_values({'epochs': 2, 'architecture': 'resnet18', 'launcher': 'kubeflow', 'num_workers': 2,"
        " 'accuracy_threshold': 0.9, 'memory_budget': '4Gi'})"
    )
    assert heavy_modules_after(check) == []


def test_the_launcher_pod_runs_a_pytorchjob_without_torch(tmp_path):
    operator = TrainingOperator()
    kube = FakeKube([operator]).start()
    try:
        environment = prepare(tmp_path, kube)
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER_POD, str(tmp_path)], capture_output=True, text=True, env=environment,
            timeout=300,
        )  # fmt: skip
    finally:
        kube.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy_modules"] == []
    assert report["metrics"]["train_loss"] == 0.9  # the model rank 0 wrote was collected
    (job,) = operator.created
    assert job.namespace == "team-a" and job.deleted
    assert json.loads((tmp_path / "job").read_text())["name"] == job.name


def test_the_distributed_step_finds_trainer_and_runs_a_trainjob_without_torch(tmp_path):
    trainer = KubeflowTrainer()
    kube = FakeKube([trainer, TrainingOperator()]).start()
    pod = launcher_pod("components.distributed_train.component", "distributed_train", launcher="auto",
                       namespace=NAMESPACE)  # fmt: skip
    try:
        environment = prepare(tmp_path, kube)
        done = subprocess.run([sys.executable, "-c", pod, str(tmp_path)], capture_output=True, text=True,
                              env=environment, timeout=300)  # fmt: skip
    finally:
        kube.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy_modules"] == [] and report["metrics"]["train_loss"] == 0.9
    (job,) = trainer.created
    assert job.namespace == NAMESPACE and job.deleted
    assert json.loads((tmp_path / "job").read_text())["kind"] == "TrainJob"
