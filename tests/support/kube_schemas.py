"""The real schemas of what the deploy targets send, strictly: unknown fields refused.

- ``apps/v1``, ``v1`` and ``autoscaling/v2`` objects: Kubernetes' own OpenAPI schemas as PyPI's
  ``kubernetes-validate`` bundles them per release, in their strict variants;
- ``serving.kserve.io/v1beta1`` InferenceServices: the InferenceService CRD of KServe 0.15.2 and 0.20.0 (in
  ``shared/reference/crds/``; 0.20.0 is what the current Kubeflow distribution ships), made strict as the
  API server's field validation is (``operator_rules.strict``), with ``metadata`` checked against Kubernetes'
  ObjectMeta (a CRD's schema says only ``type: object`` for it).

``problems`` answers a list of messages in the API server's style (``spec.template...: ...``), empty when valid.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import schema_contents

from tests.support.operator_rules import strict

KUBERNETES_VERSION = "1.31"
CRDS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "crds"
KSERVE_RELEASES = ("0.15.2", "0.20.0")


def problems(body: dict[str, Any], kserve_release: str = "0.20.0") -> list[str]:
    """Why the API server would refuse ``body`` on its schema; [] when it would not."""
    if body.get("apiVersion") == "serving.kserve.io/v1beta1":
        validator = kserve_validator(kserve_release)
        found = [_message(error) for error in validator.iter_errors(body)]
        metadata = body.get("metadata", {})
        found += [_message(error, "metadata") for error in object_meta_validator().iter_errors(metadata)]
        return sorted(found)
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [_message(error)]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


@functools.cache
def kserve_crd(release: str) -> dict:
    if release not in KSERVE_RELEASES:
        raise ValueError(f"no InferenceService CRD of KServe {release}; have {', '.join(KSERVE_RELEASES)}")
    text = (CRDS / f"serving.kserve.io_inferenceservices.v{release}.yaml").read_text()
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def kserve_validator(release: str) -> jsonschema.Draft7Validator:
    (version,) = [v for v in kserve_crd(release)["spec"]["versions"] if v["name"] == "v1beta1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


@functools.cache
def object_meta_validator() -> jsonschema.Draft202012Validator:
    """Kubernetes' ObjectMeta, strict, from kubernetes-validate's definitions."""
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
    definitions = schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    schema = {**definitions["$defs"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"], "$defs": definitions["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def _message(error: jsonschema.ValidationError, prefix: str = "") -> str:
    where = ".".join([prefix] * bool(prefix) + [str(part) for part in error.absolute_path]) or "<object>"
    return f"{where}: {error.message}"
