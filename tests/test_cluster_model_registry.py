"""Opt-in: two registrations against a real Kubeflow Model Registry.

Skipped unless set:
  KFP_TORCH_LIFECYCLE_CLUSTER_MODEL_REGISTRY_URL   the registry's REST address, e.g. after
      ``kubectl port-forward -n kubeflow svc/model-registry-service 8080:8080``: http://127.0.0.1:8080
and, for a registry behind Kubeflow's RBAC proxy, a token the registry accepts in
  KFP_TORCH_REGISTRY_TOKEN                         (e.g. ``kubectl create token default-editor -n <profile>``)

Each run uses a registered model and a serving environment of its own (``kfp-torch-test-<uuid>``), so it
touches nothing else in the registry; the Kubeflow Model Registry API has no delete, so they stay behind.
The models (the session's two real digits models) live in a local directory (the registry stores URIs; the
baseline is fetched from it).
"""

from __future__ import annotations

import os
import uuid

import pytest

from components.register.settings import RegistrySettings
from tests.support.registry_scenario import two_registrations

pytestmark = pytest.mark.cluster
URL = os.environ.get("KFP_TORCH_LIFECYCLE_CLUSTER_MODEL_REGISTRY_URL", "")


@pytest.mark.skipif(not URL, reason="set KFP_TORCH_LIFECYCLE_CLUSTER_MODEL_REGISTRY_URL to run against a real registry")
def test_two_registrations_against_a_real_kubeflow_model_registry(tmp_path, trained_models, digits_dir):
    name = f"kfp-torch-test-{uuid.uuid4().hex[:12]}"
    settings = RegistrySettings(registry="kubeflow", url=URL.rstrip("/"), model_name=name, serving_environment=name)
    settings.validate()
    result = two_registrations(
        settings,
        tmp_path,
        str(tmp_path / "artifact-store"),
        f"no version of {name} is deployed in the serving environment {name!r} of the Kubeflow Model Registry "
        f"at {settings.url}: this first model is compared with nothing",
        trained_models,
        digits_dir,
    )
    assert result["version_2"].registered_model_id == result["version_1"].registered_model_id
