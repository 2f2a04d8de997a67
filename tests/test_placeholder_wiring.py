"""The distributed pipeline hands the distributed-train step KFP's run id, task name and task id, filled in at run time.

The job's name derives from them (launcher.job_name): a constant in their place would give every run, and every
iteration of a ParallelFor, the same PyTorchJob name, and a retried step could no longer find its own job.
"""

from __future__ import annotations

import pytest
import yaml
from kfp import compiler

from pipelines.distributed_training_pipeline import build_distributed_training_pipeline

TASK = "distributed-train"
# What the KFP backend (and kfp.local) substitutes at run time; written out here, not taken from kfp.dsl, so that a
# change of KFP's placeholders is noticed too.
PLACEHOLDERS = {
    "run_id": "{{$.pipeline_job_uuid}}",  # dsl.PIPELINE_JOB_ID_PLACEHOLDER
    "task_name": "{{$.pipeline_task_name}}",  # dsl.PIPELINE_TASK_NAME_PLACEHOLDER
    "task_id": "{{$.pipeline_task_uuid}}",  # dsl.PIPELINE_TASK_ID_PLACEHOLDER
}


@pytest.fixture(scope="module")
def pipeline_spec(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("placeholders") / "distributed_training_pipeline.yaml"
    compiler.Compiler().compile(build_distributed_training_pipeline(), str(path))
    return next(yaml.safe_load_all(path.read_text()))  # the pipeline spec; the platform spec follows


def find_task(spec: dict, name: str) -> dict:
    """The task of that name, in the root DAG or in a sub-DAG (a condition, a ParallelFor)."""
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    found = [dag["tasks"][name] for dag in dags if name in dag.get("tasks", {})]
    assert len(found) == 1, f"{len(found)} tasks named {name}"
    return found[0]


@pytest.mark.parametrize("parameter", sorted(PLACEHOLDERS))
def test_the_pytorchjob_step_gets_kfps_run_time_ids(pipeline_spec, parameter):
    task = find_task(pipeline_spec, TASK)
    assert task["componentRef"]["name"] == "comp-distributed-train"
    given = task["inputs"]["parameters"].get(parameter)
    assert given == {"runtimeValue": {"constant": PLACEHOLDERS[parameter]}}, (
        f"{TASK}'s {parameter} must be KFP's {PLACEHOLDERS[parameter]}, filled in at run time; got {given}"
    )
    component = pipeline_spec["components"][task["componentRef"]["name"]]
    assert component["inputDefinitions"]["parameters"][parameter]["parameterType"] == "STRING"
