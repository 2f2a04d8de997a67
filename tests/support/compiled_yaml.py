"""Reading a compiled pipeline YAML as KFP does: into its protobufs, strictly."""

from __future__ import annotations

from pathlib import Path

import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2


def parse_strictly(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, dict[str, dict]]:
    """Parse the YAML into the KFP protobufs, failing on any unknown field; return the spec and
    each executor's KubernetesExecutorConfig as a dict."""
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 2, "a pipeline spec and a platform spec"
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(documents[1], pipeline_spec_pb2.PlatformSpec())
    executors = {}
    for name, config in platform.platforms["kubernetes"].deployment_spec.executors.items():
        as_dict = json_format.MessageToDict(config)
        json_format.ParseDict(as_dict, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        executors[name] = as_dict
    return spec, executors
