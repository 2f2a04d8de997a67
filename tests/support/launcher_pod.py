"""A distributed training step's launcher pod, run as a process of its own against the fake API server.

``LAUNCHER_POD`` (pytorchjob_train's; ``launcher_pod`` makes another component's) is what KFP's executor does in
the small launcher pod: it imports the component's module and calls the component's function with its artifacts,
``launcher="kubeflow"``. The function creates a PyTorchJob
through the kubeconfig ``prepare`` writes (a pod loads its credentials the same way), follows it to Succeeded
and collects the model that "rank 0" wrote (``prepare`` writes it beforehand, as the replicas would have). The
process prints one JSON line: which of torch, torchvision and onnx it imported, the seconds its imports took
and the metrics it logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.common.spec import ModelSpec, write_spec
from tests.support.fake_kube import FakeKube

HEAVY_MODULES = ("torch", "torchvision", "onnx")
NAMESPACE = "team-a"


def launcher_pod(module: str, function: str, **arguments: str) -> str:
    """The launcher pod's program for the component ``function`` of ``module`` (with extra ``arguments``)."""
    extra = "".join(f"    {name}={value!r},\n" for name, value in arguments.items())
    return f"""
import json, sys, time
began = time.perf_counter()
import {module} as component
imports = time.perf_counter() - began
from kfp.dsl import Artifact, Dataset, Metrics, Model

root = sys.argv[1]
metrics = Metrics(uri=root + "/metrics")
component.{function}.python_func(
    dataset=Dataset(uri=root + "/dataset", metadata={{"commit": "abc"}}),
    model=Model(uri=root + "/model"),
    metrics=metrics,
    job=Artifact(uri=root + "/job"),
    run_id="run-1",
    task_name="{function.replace("_", "-")}",
    image="registry.example.com/train:1",
{extra})
heavy = sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules)
print(json.dumps({{"heavy_modules": heavy, "import_seconds": imports, "metrics": metrics.metadata}}))
"""


LAUNCHER_POD = launcher_pod("components.pytorchjob_train.component", "pytorchjob_train", namespace=NAMESPACE)


def prepare(root: Path, kube: FakeKube) -> dict[str, str]:
    """Write what the launcher pod finds (its kubeconfig, its dataset, the model rank 0 wrote) under ``root``;
    return the environment to start it with."""
    (root / "dataset").mkdir(parents=True)
    model = root / "model"
    model.mkdir()
    history = [{"epoch": 1, "train_loss": 0.9, "train_accuracy": 0.6, "val_loss": 0.8, "val_accuracy": 0.7}]
    spec = ModelSpec(
        architecture="small_cnn",
        classes=["0", "1"],
        input_shape=[1, 8, 8],
        normalization={"mean": [0.5], "std": [0.25]},
        training={"history": history, "world_size": 2},
    )
    write_spec(model, spec)
    kubeconfig = kube.write_kubeconfig(root / "kubeconfig", NAMESPACE)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    return environment | {"KUBECONFIG": str(kubeconfig)}
