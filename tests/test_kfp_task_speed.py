"""Pipelines build without KFP's per-setter inspect.stack() (pipelines/kfp_task_speed.py), and KFP's error is kept."""

from __future__ import annotations

import inspect

import pytest
from kfp import dsl

import pipelines  # noqa: F401 (installs the shim)
from pipelines.training_pipeline import build_training_pipeline


def test_building_a_pipeline_reads_no_stack(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("inspect.stack() was called while the pipeline was built")

    monkeypatch.setattr(inspect, "stack", refuse)
    assert build_training_pipeline().component_spec.inputs["epochs"].default == 12


def test_a_setter_on_an_importer_still_names_itself():
    with pytest.raises(ValueError, match=r"^set_cpu_limit can only be used on single-step components"):

        @dsl.pipeline(name="importer-only")
        def importer_only():
            dsl.importer(artifact_uri="gs://bucket/model", artifact_class=dsl.Model).set_cpu_limit("1")
