"""Check pipeline arguments before a run is submitted, naming the bad value and what is valid.

The checks themselves are ``components.check_arguments.checks``, which the pipelines' first step
runs too; here come the ones only a submission can make: unknown names, the defaults filled in,
and the data's location.
"""

from __future__ import annotations

from typing import Any

from components.check_arguments.checks import check_values
from components.deploy.inputs import check_promotion
from components.dvc_pull.checks import validate_inputs


def check_arguments(pipeline, arguments: dict[str, Any]) -> None:
    inputs = pipeline.component_spec.inputs
    unknown = sorted(set(arguments) - set(inputs))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; the pipeline takes {', '.join(sorted(inputs))}")
    values = {name: spec.default for name, spec in inputs.items()} | arguments
    if "verified_deployment" in inputs:  # the promote pipeline
        check_promotion(values)
        return
    if values.get("repo_url") is None:
        raise ValueError("repo_url is required: the git repository that tracks the data with DVC")
    validate_inputs(
        values["repo_url"], values["rev"], [values["data_path"]], values["dvc_remote_config"], values["dvc_jobs"]
    )
    check_values(values)


def check_compiled_arguments(pipeline_name: str, arguments: dict[str, Any]) -> bool:
    """Run :func:`check_arguments` for a compiled pipeline of this library, found by ``pipelineInfo.name``.

    Returns False (and checks nothing beyond the declared types) for a pipeline this library does not define.
    """
    from pipelines.compile import PIPELINES

    for pipeline in PIPELINES.values():
        if pipeline.name == pipeline_name:
            check_arguments(pipeline, arguments)
            return True
    return False
