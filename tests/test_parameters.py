"""Every parameter described for the Kubeflow UI, each description written once; and every list of parameters derived
from, or checked against, the one place that defines it (``TrainConfig``, the job configs)."""

import typing
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.check_arguments.component import check_arguments
from components.common.descriptions import described, field_descriptions, option
from components.common.distributed_step import STEP_INPUTS
from components.common.kube.replicas import ReplicaConfig
from components.distributed_train.component import distributed_train
from components.dvc_pull.component import dvc_pull
from components.evaluate.component import evaluate
from components.pytorchjob_train.component import pytorchjob_train
from components.pytorchjob_train.manifest import PyTorchJobConfig
from components.train.component import train
from components.train.config import TrainConfig
from components.trainjob_train.component import trainjob_train
from components.trainjob_train.manifest import TrainJobConfig
from pipelines.cli import main
from pipelines.compile import PIPELINES, library_components
from pipelines.distributed_training_pipeline import distributed_training_pipeline
from pipelines.training_pipeline import training_pipeline

KFP_TYPES = {int: "Integer", float: "Float", str: "String", bool: "Boolean"}
# What a job component decides itself rather than taking as a parameter: the image (given, or the library's), the
# command (the library's training; yours is run by the script runner) and the pods' labels.
DECIDED_BY_THE_STEP = {"image", "command", "labels"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    """What ``kfp-torch compile`` writes: the pipelines and every component spec (build/components/*.yaml)."""
    root = tmp_path_factory.mktemp("compiled")
    argv = ["compile", "--output-dir", str(root / "pipelines"), "--components-dir", str(root / "components")]
    assert main(argv) == 0
    return {path.stem: path for path in sorted(root.glob("*/*.yaml"))}


def interface(path: Path) -> dict[str, dict]:
    """A compiled file's inputs and outputs (parameters and artifacts), ``input.<name>`` / ``output.<name>``."""
    root = next(yaml.safe_load_all(path.read_text()))["root"]
    found = {}
    for side, key in (("input", "inputDefinitions"), ("output", "outputDefinitions")):
        for kind in ("parameters", "artifacts"):
            found |= {f"{side}.{name}": spec for name, spec in root.get(key, {}).get(kind, {}).items()}
    return found


# --- descriptions ------------------------------------------------------------------------------------------------


def test_every_input_and_output_of_every_pipeline_and_component_spec_is_described(compiled):
    assert set(PIPELINES) | set(library_components()) <= set(compiled)
    undescribed = {
        name: [entry for entry, spec in interface(path).items() if not spec.get("description", "").strip()]
        for name, path in compiled.items()
    }
    assert {name: entries for name, entries in undescribed.items() if entries} == {}


def test_a_parameter_passed_on_has_the_description_of_the_input_it_feeds():
    training = training_pipeline.component_spec.inputs
    distributed = distributed_training_pipeline.component_spec.inputs
    for item in fields(TrainConfig):
        written = item.metadata["description"]
        for inputs in (training, distributed, train.component_spec.inputs, check_arguments.component_spec.inputs):
            assert inputs[item.name].description == written, item.name
    assert training["dvc_jobs"].description == dvc_pull.component_spec.inputs["jobs"].description
    assert training["repo_url"].description == dvc_pull.component_spec.inputs["repo_url"].description
    threshold = evaluate.component_spec.inputs["accuracy_threshold"]
    assert training["accuracy_threshold"].description == threshold.description
    for name in ("launcher", "num_workers", "cpu", "command", "queue_timeout_seconds"):
        assert distributed[name].description == distributed_train.component_spec.inputs[name].description, name
    assert training["deploy_target"].description == distributed["deploy_target"].description


def test_automatic_and_empty_values_say_what_they_mean():
    inputs = training_pipeline.component_spec.inputs
    for name in ("image_size", "channels", "workers"):
        assert "-1: automatic" in inputs[name].description, name
    assert "Empty: automatic, a quarter of the pod's memory limit" in inputs["memory_budget"].description
    assert "beside an empty image_repository builds no image" in inputs["build_image"].description
    assert "Empty: no image is built, whatever build_image says" in inputs["image_repository"].description
    assert "empty deploys nothing to a cluster" in inputs["deploy_namespace"].description


def test_the_gpu_defaults_that_differ_between_the_pipelines_say_why():
    single = training_pipeline.component_spec.inputs["gpus"]
    per_pod = distributed_training_pipeline.component_spec.inputs["gpus"]
    assert (single.default, per_pod.default) == (1, 0)
    assert "default 1" in single.description and "defaults to 0" in single.description
    assert "The default, 0, runs on any node" in per_pod.description and "defaults to 1" in per_pod.description


def test_the_pipelines_share_every_default_but_the_placement_whose_descriptions_say_why():
    single = training_pipeline.component_spec.inputs
    per_pod = distributed_training_pipeline.component_spec.inputs
    differ = {name for name in single if name in per_pod and single[name].default != per_pod[name].default}
    assert differ == {"gpus", "node_selector", "tolerations"}
    for name in ("node_selector", "tolerations"):
        assert "dropped with gpus 0" in single[name].description, name
    assert "nothing is added for GPUs" in per_pod["node_selector"].description
    assert "With gpus, add your GPU nodes' taints here" in per_pod["tolerations"].description


def test_evaluates_output_is_named_the_promotion_decision(compiled):
    decision = interface(compiled["evaluate"])["output.Output"]["description"]
    assert decision.startswith("The promotion decision")
    assert evaluate.component_spec.outputs["Output"].description == decision


def test_described_fills_args_and_returns_from_the_sources_in_order():
    @described({"epochs": "from the first source", "model": "the model"}, {"epochs": "never", "seed": "the seed"})
    def step(dataset: Input[Dataset], model: Output[Model], epochs: int = 1, seed: int = 0, own: str = "") -> bool:
        """Does a step.

        More about it.

        Args:
            dataset: its own words
            own: spread over
                two lines.

        Returns:
            Output: whether it worked.
        """

    assert step.__doc__ == (
        "Does a step.\n\nMore about it.\n\n"
        "Args:\n    dataset: its own words\n    epochs: from the first source\n    seed: the seed\n"
        "    own: spread over two lines.\n\n"
        "Returns:\n    model: the model\n    Output: whether it worked.\n"
    )
    component = dsl.component(step, base_image="python:3.11")
    assert component.component_spec.inputs["own"].description == "spread over two lines."
    assert component.component_spec.outputs["model"].description == "the model"
    assert component.component_spec.outputs["Output"].description == "whether it worked."


@pytest.mark.parametrize(
    "docstring, message",
    [
        ("Args:\n        gone: a parameter it no longer takes\n", r"describes gone, which it does not take or give"),
        ("Args:\n        a, b: two at once\n", r"entry must read 'name: description', got 'a, b: two at once'"),
        ("Returns:\n        The value.\n", r"entry must read 'name: description', got 'The value.'"),
    ],
)
def test_described_refuses_an_entry_it_cannot_place(docstring, message):
    def step(a: int, b: int) -> int:
        pass

    step.__doc__ = "A step.\n\n    " + docstring
    with pytest.raises(ValueError, match=message):
        described()(step)


def test_the_embedded_source_is_the_function_without_its_decorators(tmp_path):
    path = tmp_path / "train.yaml"
    compiler.Compiler().compile(train, str(path))
    source = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]["exec-train"]
    program = source["container"]["command"][-1]
    assert "\ndef train(" in program and "@described" not in program and "@dsl" not in program


def test_an_option_without_a_description_is_refused():
    with pytest.raises(ValueError, match="an option needs a description"):
        option(1)


# --- one source for every parameter list --------------------------------------------------------------------------


def takes_training_options(inputs) -> bool:
    return any(item.name in inputs for item in fields(TrainConfig))


def test_every_component_and_pipeline_with_training_options_takes_all_of_them_with_the_trainers_defaults():
    hints, defaults = typing.get_type_hints(TrainConfig), TrainConfig()
    checked, wrong = [], {}
    for name, task in {**library_components(), **PIPELINES}.items():
        inputs = task.component_spec.inputs or {}
        if not takes_training_options(inputs):
            continue
        checked.append(name)
        for item in fields(TrainConfig):
            spec, default = inputs.get(item.name), getattr(defaults, item.name)
            if spec is None:
                wrong.setdefault(name, []).append(f"{item.name} missing")
            elif spec.type != KFP_TYPES[hints[item.name]] or spec.default != default:
                wrong.setdefault(name, []).append(f"{item.name}: {spec.type} = {spec.default!r}, not {default!r}")
    assert wrong == {}
    for pipeline in (training_pipeline, distributed_training_pipeline):
        assert pipeline.component_spec.inputs["pretrained_weights"].default == ""
    distributed = distributed_training_pipeline.component_spec.inputs
    assert distributed["command"].default == [] and distributed["script_hyperparameters"].default == {}
    assert set(checked) == {
        "train",
        "pytorchjob_train",
        "trainjob_train",
        "distributed_train",
        "check_arguments",
        "training_pipeline",
        "distributed_training_pipeline",
    }


def test_every_job_setting_is_a_parameter_of_its_component():
    for component, config in ((pytorchjob_train, PyTorchJobConfig), (trainjob_train, TrainJobConfig)):
        inputs = component.component_spec.inputs
        missing = {item.name for item in fields(config)} - DECIDED_BY_THE_STEP - set(inputs)
        assert not missing, (component.name, missing)


def test_every_input_of_a_job_component_is_a_setting_the_step_knows():
    """An input none of these sources knows would reach the step and be dropped by ``from_parameters`` unseen."""
    known = {item.name for config in (PyTorchJobConfig, TrainJobConfig, TrainConfig) for item in fields(config)}
    known |= set(STEP_INPUTS) | {"launcher"}
    for component, own in ((pytorchjob_train, set()), (trainjob_train, set()), (distributed_train, {"num_workers"})):
        inputs = set(component.component_spec.inputs) | set(component.component_spec.outputs)
        assert inputs - known - own == set(), component.name


def test_every_check_arguments_input_is_a_pipeline_parameter_with_the_pipelines_default():
    pipelines = {**training_pipeline.component_spec.inputs, **distributed_training_pipeline.component_spec.inputs}
    for name, spec in check_arguments.component_spec.inputs.items():
        if name == "distributed":
            continue  # the step's own: which pipeline runs it
        assert name in pipelines, name
        if spec.default is not None and name not in ("baseline",):  # baseline's default is the cluster settings'
            assert spec.default == pipelines[name].default, name
    assert (
        check_arguments.component_spec.inputs["baseline"].default
        == training_pipeline.component_spec.inputs["baseline"].default
    )


def test_the_distributed_pipeline_passes_every_parameter_distributed_train_takes(compiled):
    spec = next(yaml.safe_load_all(compiled["distributed_training_pipeline"].read_text()))
    task = spec["root"]["dag"]["tasks"]["distributed-train"]["inputs"]["parameters"]
    parameters = distributed_training_pipeline.component_spec.inputs
    passed = {name for name in distributed_train.component_spec.inputs if name in parameters}
    assert passed >= {item.name for item in fields(TrainConfig)} | {"launcher", "num_workers", "pretrained_weights"}
    for name in passed:
        assert task[name] == {"componentInputParameter": name}, name


def test_a_job_config_takes_the_parameters_it_has_and_the_steps_own_choices():
    parameters = {"image": "", "command": ["python", "mine.py"], "cpu": "1", "num_workers": 3, "epochs": 9}
    config = PyTorchJobConfig.from_parameters(parameters, image="registry.example.com/t:1", command=["train"])
    assert (config.image, config.command, config.cpu, config.num_workers) == (
        "registry.example.com/t:1",
        ["train"],
        "1",
        3,
    )
    assert config.memory == ReplicaConfig(image="i", command=["c"]).memory  # not given: the config's default
    trainjob = TrainJobConfig.from_parameters(parameters, image="i", command=["c"], num_nodes=parameters["num_workers"])
    assert trainjob.num_nodes == 3 and not hasattr(trainjob, "num_workers")


def test_the_described_config_fields_are_every_field():
    for config in (TrainConfig, ReplicaConfig, PyTorchJobConfig, TrainJobConfig):
        assert set(field_descriptions(config)) == {item.name for item in fields(config)}, config.__name__
