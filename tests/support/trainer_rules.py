"""What a TrainJob must pass before Kubeflow Trainer runs it, per Trainer release: the CRD's schema, strictly (unknown
fields refused where the API server would prune them), the CRD's CEL rules (``x-kubernetes-validations``: the
RFC 1035 name of at most 63 characters, the immutable fields on an update), and Trainer's validating webhook
(``pkg/webhooks/trainjob_webhook.go`` and the plugins it runs: the runtime must be registered and must exist, the
torch plugin's reserved ``PET_*`` variables and, in v2.1, its ``numProcPerNode`` values, the JobSet plugin's rules
on the override field).

The API server applies them in this order: schema and CEL rules first (HTTP 422, ``<Kind>.<group> "<name>" is
invalid: ...``), then the validating webhooks. Trainer's webhook is built on controller-runtime, which answers a
refusal that is not an API status with 403 Forbidden; the API server prefixes its message with
``admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: ``.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

from tests.support.operator_rules import strict

REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference"
CRDS = {
    "2.3": REFERENCE / "crds/trainer.kubeflow.org_trainjobs.yaml",
    "2.1": REFERENCE / "crds/trainer.kubeflow.org_trainjobs.v2.1.0.yaml",
}
RUNTIMES = {
    "2.3": REFERENCE / "runtimes/torch_distributed.v2.3.0.yaml",
    "2.1": REFERENCE / "runtimes/torch_distributed.v2.1.0.yaml",
}
GROUP = "trainer.kubeflow.org"
WEBHOOK = "validator.trainjob.trainer.kubeflow.org"
RESERVED_ENV = ("PET_MASTER_ADDR", "PET_MASTER_PORT", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE")
NODE = "node"
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HTTP_PATH = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")  # apimachinery's httpPathRegexp


@functools.cache
def schema(release: str) -> dict:
    crd = yaml.safe_load(CRDS[release].read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


@functools.cache
def validator(release: str) -> jsonschema.Draft7Validator:
    """The release's TrainJob schema, strict."""
    return jsonschema.Draft7Validator(strict(schema(release)))


def runtime(release: str) -> dict:
    """The torch-distributed ClusterTrainingRuntime as the release installs it."""
    return yaml.safe_load(RUNTIMES[release].read_text())


def schema_errors(body: dict, release: str) -> list[str]:
    """What the API server's schema validation says of ``body``: each error as ``<path>: <message>``."""
    errors = []
    for error in sorted(validator(release).iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(part) for part in error.absolute_path)
        if error.validator == "additionalProperties":
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            errors += [f'unknown field "{path + "." if path else ""}{name}"' for name in unknown]
        else:
            errors.append(f"{path}: Invalid value: {json.dumps(error.instance)[:80]}: {error.message}")
    return errors


# --- CEL rules --------------------------------------------------------------------------------------------------

_CEL = celpy.Environment()


@functools.cache
def _program(rule: str):
    return _CEL.program(_CEL.compile(rule))


def cel_errors(body: dict, release: str, old: dict | None = None) -> list[str]:
    """Each CEL rule of the release's schema that ``body`` breaks, as the API server reports it. Transition rules
    (those naming ``oldSelf``) are evaluated only on an update, where the old object has the value too; list items
    are correlated only in lists of type map, by their keys, as the API server correlates them."""
    errors: list[str] = []
    _walk(schema(release), body, old, "", errors)
    return errors


def _walk(node: dict, value: Any, old: Any, path: str, errors: list[str]) -> None:
    if value is None:
        return
    for rule in node.get("x-kubernetes-validations") or []:
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not bool(_program(rule["rule"]).evaluate(activation)):
            kind = "object" if isinstance(value, dict) else type(value).__name__
            errors.append(f'{path or "<root>"}: Invalid value: "{kind}": {rule.get("message") or rule["rule"]}')
    if isinstance(value, dict):
        for key, child in (node.get("properties") or {}).items():
            if key in value:
                _walk(child, value[key], old.get(key) if isinstance(old, dict) else None, _join(path, key), errors)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                _walk(extra, item, old.get(key) if isinstance(old, dict) else None, _join(path, key), errors)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        keys = node.get("x-kubernetes-list-map-keys") if node.get("x-kubernetes-list-type") == "map" else None
        olds = {tuple(item.get(k) for k in keys): item for item in old or []} if keys else {}
        for index, item in enumerate(value):
            previous = olds.get(tuple(item.get(k) for k in keys)) if keys and isinstance(item, dict) else None
            _walk(node["items"], item, previous, f"{path}[{index}]", errors)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- Trainer's validating webhook ---------------------------------------------------------------------------------


def webhook_errors(
    body: dict,
    release: str,
    runtimes: dict[tuple[str, str], dict],
    runtime_kinds: set[str],
    namespace: str,
    old: dict | None = None,
) -> list[str] | str:
    """Trainer's TrainJob validator: a str for its first refusal ("unsupported runtime: ..."), else the field errors
    of the runtime and its plugins (empty: admitted). ``runtimes`` maps (kind, name) to the runtimes that exist
    (a TrainingRuntime's name is ``<namespace>/<name>``); ``runtime_kinds`` are the kinds its registry serves."""
    spec = body.get("spec") or {}
    ref = spec.get("runtimeRef") or {}
    group, kind = ref.get("apiGroup") or GROUP, ref.get("kind") or "ClusterTrainingRuntime"
    if group != GROUP or kind not in runtime_kinds:
        return f"unsupported runtime: {kind}.{group}"
    key = (kind, ref["name"] if kind == "ClusterTrainingRuntime" else f"{namespace}/{ref['name']}")
    found = runtimes.get(key)
    if found is None:
        plural, field = (
            ("clustertrainingruntimes", "spec.RuntimeRef")
            if kind == "ClusterTrainingRuntime"
            else ("trainingruntimes", "spec.runtimeRef")
        )
        noun = "clusterTrainingRuntime" if kind == "ClusterTrainingRuntime" else "trainingRuntime"
        return [
            f'{field}: Invalid value: {json.dumps(ref, sort_keys=True)}: {plural}.{GROUP} "{ref["name"]}" not found: '
            f"specified {noun} must be created before the TrainJob is created"
        ]
    errors = []
    trainer = spec.get("trainer") or {}
    if ((found.get("spec") or {}).get("mlPolicy") or {}).get("torch") is not None:
        if release == "2.1" and isinstance(trainer.get("numProcPerNode"), str):
            if trainer["numProcPerNode"] not in ("auto", "cpu", "gpu"):
                errors.append(
                    f'spec.trainer.numProcPerNode: Invalid value: "{trainer["numProcPerNode"]}": '
                    "must have an int value or [auto cpu gpu]"
                )
        reserved = sorted({env.get("name") for env in trainer.get("env") or []} & set(RESERVED_ENV))
        if reserved:
            errors.append(
                f"spec.trainer.env: Invalid value: {json.dumps(trainer.get('env'))}: must not have reserved envs, "
                f"invalid envs configured: [{' '.join(reserved)}]"
            )
    errors += _override_errors(spec, release, found, old)
    return errors


def _runtime_containers(found: dict) -> dict[str, set[str]]:
    jobs = found["spec"]["template"]["spec"]["replicatedJobs"]
    return {
        job["name"]: {c["name"] for c in job["template"]["spec"]["template"]["spec"].get("containers", [])}
        | {c["name"] for c in job["template"]["spec"]["template"]["spec"].get("initContainers", [])}
        for job in jobs
    }


def _override_errors(spec: dict, release: str, found: dict, old: dict | None) -> list[str]:
    """The JobSet plugin's rules on the release's override field."""
    containers = _runtime_containers(found)
    errors = []
    if release == "2.1":
        path, field = "spec.podTemplateOverrides", "podTemplateOverrides"
        overrides = [(target["name"], o.get("spec") or {}) for o in spec.get(field) or [] for target in o["targetJobs"]]
        missing_job = "must not have targetJob that doesn't exist in the runtime job template"
    else:
        path, field = "spec.runtimePatches", "runtimePatches"
        overrides = []
        for patch in spec.get(field) or []:
            manager = patch.get("manager", "")
            host, slash, rest = manager.partition("/")
            if not (slash and host and rest and DNS_1123_SUBDOMAIN.match(host) and HTTP_PATH.match(rest)):
                errors.append(
                    f'{path}.manager: Invalid value: "{manager}": '
                    'must be a domain-prefixed path (such as "acme.io/foo")'
                )
            template = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
            for job in template.get("replicatedJobs") or []:
                pod = (((job.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
                overrides.append((job["name"], pod))
        missing_job = "must not have replicated job that doesn't exist in the runtime job template"
    for job, pod in overrides:
        if job not in containers:
            errors.append(f'{path}: Invalid value: "array": {missing_job}')
            continue
        for kind in ("initContainers", "containers"):
            for container in pod.get(kind) or []:
                noun = "initContainer" if kind == "initContainers" else "container"
                if container["name"] not in containers[job]:
                    errors.append(
                        f'{path}: Invalid value: "array": must not have {noun} that doesn\'t exist in the runtime '
                        f"job {job}"
                    )
                elif kind == "containers" and container.get("env") and container["name"] == NODE:
                    errors.append(
                        f'{path}: Invalid value: "array": must not have envs for the dataset-initializer, '
                        "model-initializer, node containers"
                    )
    if old is not None and (old.get("spec") or {}).get(field) != spec.get(field):
        was, now = (old.get("spec") or {}).get("suspend") is True, spec.get("suspend") is True
        if release == "2.1" and not now:
            errors.append(
                f"{path}: Forbidden: PodTemplateOverrides can only be modified when the TrainJob is suspended"
            )
        if release != "2.1" and not was and not now:
            errors.append(
                f"{path}: Forbidden: RuntimePatches can only be modified when the TrainJob is suspended before or "
                "after the update"
            )
    return errors


def aggregate(errors: list[str]) -> str:
    """apimachinery's utilerrors.Aggregate: one error as it is, several in brackets."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def webhook_message(refusal: list[str] | str) -> str:
    text = refusal if isinstance(refusal, str) else aggregate(refusal)
    return f'admission webhook "{WEBHOOK}" denied the request: {text}'


def invalid_message(name: str, errors: list[str]) -> str:
    """The API server's 422 for an object its schema or CEL rules refuse."""
    return f'TrainJob.{GROUP} "{name}" is invalid: {aggregate(errors)}'
