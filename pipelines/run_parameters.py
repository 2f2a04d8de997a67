"""Run parameters from ``--param key=value``: typed and checked against a compiled pipeline's inputs.

The declared inputs are ``root.inputDefinitions.parameters`` of the pipeline spec, each with a
``parameterType`` (STRING, NUMBER_INTEGER, NUMBER_DOUBLE, BOOLEAN, STRUCT, LIST), and optionally
``defaultValue`` / ``isOptional``. Nothing is sent before every value has its declared type.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

TYPE_HINTS = {
    "STRING": "any text",
    "NUMBER_INTEGER": "a whole number such as 12",
    "NUMBER_DOUBLE": "a number such as 0.95",
    "BOOLEAN": "true or false",
    "STRUCT": 'a JSON object such as {"key": "value"}',
    "LIST": 'a JSON array such as ["a", "b"]',
}


class ParameterError(ValueError):
    """A run parameter that does not fit the pipeline's declared inputs."""


@dataclass
class CompiledPipeline:
    """A compiled pipeline file: the pipeline spec and the optional platform spec (second YAML document)."""

    path: Path | None
    pipeline_spec: dict
    platform_spec: dict

    @property
    def name(self) -> str:
        return self.pipeline_spec.get("pipelineInfo", {}).get("name", "")

    @property
    def description(self) -> str:
        return self.pipeline_spec.get("pipelineInfo", {}).get("description", "")

    @property
    def inputs(self) -> dict[str, dict]:
        return declared_inputs(self.pipeline_spec)

    def run_body_spec(self) -> dict:
        """``pipeline_spec`` for a run body, as kfp.Client sends it.

        The pipeline spec alone when there is no platform spec, else
        ``{"pipeline_spec": ..., "platform_spec": ...}``. Both go through the protobuf messages and
        back, exactly like ``kfp.client.client._PipelineDoc.to_dict``.
        """
        from google.protobuf import json_format
        from kfp.pipeline_spec import pipeline_spec_pb2

        pipeline = json_format.ParseDict(self.pipeline_spec, pipeline_spec_pb2.PipelineSpec())
        platform = json_format.ParseDict(self.platform_spec, pipeline_spec_pb2.PlatformSpec())
        if platform == pipeline_spec_pb2.PlatformSpec():
            return json_format.MessageToDict(pipeline)
        return {
            "pipeline_spec": json_format.MessageToDict(pipeline),
            "platform_spec": json_format.MessageToDict(platform),
        }

    def without_cache(self) -> CompiledPipeline:
        """A copy with caching off for every task, those inside ``dsl.If`` and other sub-DAGs too.

        (``kfp.Client(enable_caching=False)`` reaches only the root DAG's tasks.)
        """
        spec = copy.deepcopy(self.pipeline_spec)
        dags = [spec.get("root", {}).get("dag", {})]
        dags += [component["dag"] for component in spec.get("components", {}).values() if "dag" in component]
        for dag in dags:
            for task in dag.get("tasks", {}).values():
                task.setdefault("cachingOptions", {})["enableCache"] = False
        return CompiledPipeline(self.path, spec, self.platform_spec)

    def write(self, path: str | Path) -> Path:
        """The pipeline as a compiled YAML file (pipeline spec, then any platform spec), as kfp.Client reads it."""
        documents = [self.pipeline_spec] + ([self.platform_spec] if self.platform_spec else [])
        path = Path(path)
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        return path


def load_compiled(path: str | Path) -> CompiledPipeline:
    """Read a compiled pipeline YAML: the first document is the pipeline spec, later ones the platform spec."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ParameterError(f"cannot read the pipeline file {path}: {error.strerror or error}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise ParameterError(f"{path} is not valid YAML: {error}") from None
    if not documents or not isinstance(documents[0], dict) or "root" not in documents[0]:
        raise ParameterError(f"{path} is not a compiled KFP pipeline (no pipeline spec with a 'root' in it)")
    platform: dict = {}
    for doc in documents[1:]:
        platform.update(doc)
    return CompiledPipeline(path, documents[0], platform)


def from_version_spec(spec: dict) -> CompiledPipeline:
    """A pipeline version's ``pipeline_spec`` as the API returns it (bare, or with a platform spec)."""
    if "root" not in spec and isinstance(spec.get("pipeline_spec"), dict):
        return CompiledPipeline(None, spec["pipeline_spec"], spec.get("platform_spec") or {})
    return CompiledPipeline(None, spec, {})


def declared_inputs(pipeline_spec: dict) -> dict[str, dict]:
    return dict(pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def split_assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise ParameterError(f"--param {text!r} is not key=value (for example --param epochs=3)")
    return name.strip(), value


def convert(name: str, raw: str, parameter_type: str):
    """The typed value of ``raw`` for a parameter of ``parameter_type``."""
    hint = TYPE_HINTS.get(parameter_type, parameter_type)

    def bad(detail: str = ""):
        return ParameterError(f"parameter {name} is {parameter_type}: {raw!r} is not {hint}{detail}")

    if parameter_type == "STRING":
        return raw
    if parameter_type == "NUMBER_INTEGER":
        text = raw.strip()
        if not text.lstrip("+-").isdigit():
            raise bad()
        return int(text)
    if parameter_type == "NUMBER_DOUBLE":
        try:
            number = float(raw)
        except ValueError:
            raise bad() from None
        if not math.isfinite(number):
            raise bad(" (it must be finite)")
        return number
    if parameter_type == "BOOLEAN":
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            raise bad()
        return lowered == "true"
    if parameter_type in ("STRUCT", "LIST"):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            raise bad(f" ({error.msg} at character {error.pos})") from None
        expected = dict if parameter_type == "STRUCT" else list
        if not isinstance(value, expected):
            raise bad()
        return value
    raise ParameterError(f"parameter {name} has a type this tool does not know: {parameter_type}")


def parse_params(assignments: list[str], inputs: dict[str, dict], pipeline_name: str = "the pipeline") -> dict:
    """Typed values for ``key=value`` assignments, checked against the declared inputs.

    Unknown names, repeated names, wrong types and missing required inputs all fail here.
    """
    values: dict = {}
    for text in assignments:
        name, raw = split_assignment(text)
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "no parameters"
            raise ParameterError(f"unknown parameter {name!r}: {pipeline_name} takes {known}")
        if name in values:
            raise ParameterError(f"parameter {name} is given twice")
        values[name] = convert(name, raw, inputs[name].get("parameterType", "STRING"))
    missing = sorted(
        name
        for name, spec in inputs.items()
        if name not in values and "defaultValue" not in spec and not spec.get("isOptional")
    )
    if missing:
        raise ParameterError(
            f"{pipeline_name} needs {', '.join(missing)}: pass " + " ".join(f"--param {m}=..." for m in missing)
        )
    return values
