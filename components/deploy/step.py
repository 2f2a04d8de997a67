"""The deploy step's logic, below its KFP wrapper: what to verify with, which target, ``run_deploy`` (or
``run_promotion``), the registry, and the step's output.

``held_out_for`` picks what a deployment is verified with, before anything is applied: held-out test images
from the Dataset by the Model's split rule with evaluate's predictions (a deploy after training), or the very
images and answers a staging deployment was verified with (``promote_pipeline``'s canary, from that deploy's
output). ``run_step`` then runs the target (``open_target``) and, after a verified deploy, tells the registry:
the image on the registered version (``record_image``) and, for production, that it serves
(``mark_production``). The step's output directory (the ``deployment`` artifact) holds:

- ``deployment.json``: ``url``, ``image``, ``previous_image``, ``rolled_back``, ``changed``, ``canary``,
  ``promoted``, ``target``, ``namespace``, ``name``, ``model_tag``, ``bento``, ``cause`` (why it rolled back,
  else ""), ``verification`` (``images``, ``agreed``, ``answered_200``, ``served_accuracy``,
  ``evaluated_accuracy``, ``p50_ms``, ``p99_ms``, ``disagreements``, ...), ``registered`` (the register
  step's metadata, or null), ``deployed_at``;
- ``manifests.yaml``: what was applied, one YAML document per object;
- ``held_out/``: the images it was verified with and evaluate's answers for them.

A failed deployment is rolled back by ``run_deploy`` and fails the step, leaving no output; with
``fail_on_rollback=False`` a deployment that was rolled back instead ends the step with ``rolled_back`` true
and the cause recorded, so that the pipeline goes on (a report, a notification).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.common.artifacts import atomic_directory, write_json_atomic
from components.deploy.deploy import DeployFailed, DeployResult, run_deploy, run_promotion
from components.deploy.held_out import HeldOutSet, check_count, load_held_out, select_held_out
from components.deploy.local_bentos import BentoArchive
from components.deploy.target import DeployRequest, Target
from components.deploy.verification import DEFAULT_TIMEOUT_SECONDS, Verification, verify_held_out

DEPLOYMENT_FILE = "deployment.json"
MANIFESTS_FILE = "manifests.yaml"
HELD_OUT_DIR = "held_out"


class DeployInputError(ValueError):
    """Inputs that cannot make a deployment; found before anything is applied."""


@dataclass(frozen=True)
class VerifiedWith:
    """What a deployment is verified with: the held-out set and the model tag the service must report."""

    held_out: HeldOutSet
    model_tag: str = ""
    dataset_commit: str = ""
    registered: Mapping[str, Any] | None = None  # a staging deployment's registered version, for promotion


@dataclass(frozen=True)
class StepOutcome:
    url: str
    image: str
    previous_image: str
    rolled_back: bool
    record: dict[str, Any]


def held_out_for(
    count: int,
    dataset_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    predictions_file: str | Path | None = None,
    verified_deployment: str | Path | None = None,
    image: str = "",
    model_tag: str = "",
) -> VerifiedWith:
    """What to verify with: the Model, Dataset and evaluate's predictions, or a verified deployment's output (whose
    image must be ``image``: only a verified image is promoted). ``model_tag``: the model the service must report
    (the bento's), when known."""
    check_count(count)
    evaluated = (dataset_dir, model_dir, predictions_file)
    if all(item is not None for item in evaluated):
        from components.common.spec import load_spec

        held_out = select_held_out(dataset_dir, model_dir, predictions_file, count)
        return VerifiedWith(held_out, model_tag, str(load_spec(model_dir).dataset.get("commit", "")))
    if verified_deployment is not None:
        record = read_deployment(verified_deployment)
        if not (record.get("verification") or {}).get("passed"):
            raise DeployInputError(f"the deployment in {verified_deployment} was not verified: nothing to promote")
        if image and record.get("image") != image:
            raise DeployInputError(
                f"image {image} is not the one the deployment in {verified_deployment} verified "
                f"({record.get('image') or 'a local bento, no image'}): promote the image that was verified"
            )
        held_out = load_held_out(Path(verified_deployment) / HELD_OUT_DIR)
        return VerifiedWith(
            held_out,
            model_tag or record.get("model_tag", ""),
            record.get("dataset_commit", ""),
            record.get("registered"),
        )
    given = [
        name for name, item in zip(("dataset", "model", "predictions"), evaluated, strict=True) if item is not None
    ]
    raise DeployInputError(
        "nothing to verify the deployment with: give the model, the dataset and evaluate's predictions "
        f"(given: {', '.join(given) or 'none of them'}), or a verified deployment (a deploy step's output)"
    )


def read_deployment(directory: str | Path) -> dict[str, Any]:
    """A deploy step's ``deployment.json``."""
    path = Path(directory) / DEPLOYMENT_FILE
    if not path.is_file():
        raise DeployInputError(f"{directory} holds no {DEPLOYMENT_FILE}: not the output of a deploy step")
    return json.loads(path.read_text())


def local_bento(bento_dir: str | Path) -> BentoArchive:
    """The bento archive in ``build_bento``'s output directory (read, so a bad archive fails before anything)."""
    from components.build_bento.packaging import read_descriptor

    try:
        descriptor = read_descriptor(bento_dir)
    except (OSError, ValueError) as error:
        raise DeployInputError(f"{bento_dir} is not build_bento's output (no readable bento.json): {error}") from None
    return BentoArchive.read(Path(bento_dir) / descriptor["archive"])


def open_target(request: DeployRequest, echo: Callable[[str], None] = print) -> Target:
    """The target ``request.target`` names, talking to the cluster the step runs in (or this machine)."""
    if request.target == "local":
        from components.deploy.local_target import LocalTarget

        return LocalTarget(request.name, echo=echo)
    from components.deploy.kube_client import DeployApi

    api = DeployApi.from_environment()
    if request.target == "deployment":
        from components.deploy.deployment_target import DeploymentTarget

        return DeploymentTarget(api, request.namespace, request.name, echo=echo)
    from components.deploy.kserve_target import KServeTarget

    return KServeTarget(api, request.namespace, request.name, echo=echo)


def run_step(
    request: DeployRequest,
    verified_with: VerifiedWith,
    output_dir: str | Path,
    target: Target | None = None,
    promote: bool = False,
    production: bool = False,
    registered: Mapping[str, Any] | None = None,
    verify_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    deadline_seconds: float = 600.0,
    keep_failed: bool = False,
    fail_on_rollback: bool = True,
    echo: Callable[[str], None] = print,
) -> StepOutcome:
    """Deploy (or, with ``promote``, promote the canary of) ``request`` on ``target``, verify it with
    ``verified_with``, tell the registry, and write the output into ``output_dir``; see the module docstring."""
    request.validate()
    registered = registered if registered is not None else verified_with.registered
    archive = BentoArchive.read(request.bento) if request.target == "local" else None
    identity = archive.tag if archive else request.image  # as the target's Revision.image names it
    target = target if target is not None else open_target(request, echo)
    verifications: list[Verification] = []

    def verify(url: str) -> Verification:
        verification = verify_held_out(url, verified_with.held_out, verify_timeout_seconds, verified_with.model_tag)
        verifications.append(verification)
        return verification

    previous = target.current()
    cause, result = "", None
    try:
        if promote:
            result = run_promotion(target, request, verify, deadline_seconds, echo)
        else:
            result = run_deploy(target, request, verify, keep_failed, deadline_seconds, echo)
        record_verification = getattr(target, "record_verification", None)  # the local target's deployed.json
        if record_verification is not None and result.verification is not None:
            record_verification(result.verification.to_dict())
    except DeployFailed as failure:
        if fail_on_rollback or not _rolled_back(failure, target, previous, identity):
            raise
        cause = str(failure)
        echo(f"the deployment was rolled back; the step goes on (fail_on_rollback=false): {cause}")
        manifests = failure.result.manifests if failure.result is not None else ()
        verification = verifications[-1] if verifications else None
        result = DeployResult("", identity, previous.image, True, True, verification, manifests, request.canary)
    finally:
        close = getattr(target, "close", None)
        if close is not None:
            close()
    if not cause:
        _tell_registry(request, result, registered, production, echo)
    record = _record(request, archive, result, verified_with, registered, cause, promote)
    _write_output(output_dir, record, result.manifests, verified_with.held_out)
    return StepOutcome(record["url"], record["image"], record["previous_image"], record["rolled_back"], record)


def _rolled_back(failure: DeployFailed, target: Target, previous, identity: str) -> bool:
    """Whether the failed deployment left the previous revision serving (a rollback, or a canary removed)."""
    if failure.result is not None:
        return failure.result.rolled_back
    now = target.current()
    return previous is not None and previous.image != identity and now is not None and now.image == previous.image


def _tell_registry(
    request: DeployRequest,
    result: DeployResult,
    registered: Mapping[str, Any] | None,
    production: bool,
    echo: Callable[[str], None],
) -> None:
    if not registered:
        if production:
            echo("no registered version was given: no registry is told what serves in production")
        return
    from components.register.register import mark_production, record_image
    from components.register.registry import Deployment

    if not request.is_cluster:
        echo("a local deployment serves no image and is not production: the registry is not told")
        return
    record_image(registered, result.image)
    if production:
        deployment = Deployment(request.name, result.url, result.image, request.namespace, runtime="bentoml")
        mark_production(registered, deployment)


def _record(
    request: DeployRequest,
    archive: BentoArchive | None,
    result: DeployResult,
    verified_with: VerifiedWith,
    registered: Mapping[str, Any] | None,
    cause: str,
    promote: bool,
) -> dict[str, Any]:
    if archive is not None:
        from components.deploy.local_target import serve_url

        url = serve_url()  # where `make serve` serves what is deployed; the step's own server is stopped
    else:
        url = result.url  # "" after a rollback
    verification = result.verification.to_dict() if result.verification is not None else None
    return {
        "url": url,
        "image": archive.tag if archive else result.image,
        "previous_image": result.previous_image,
        "rolled_back": result.rolled_back,
        "changed": result.changed,
        "canary": result.canary,
        "promoted": promote and not cause,
        "cause": cause,
        "target": request.target,
        "namespace": request.namespace,
        "name": request.name,
        "bento": archive.tag if archive else "",
        "model_tag": verified_with.model_tag,
        "dataset_commit": verified_with.dataset_commit,
        "labels": dict(request.labels),
        "verification": verification,
        "registered": dict(registered) if registered else None,
        "deployed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_output(output_dir: str | Path, record: dict, manifests, held_out: HeldOutSet) -> None:
    with atomic_directory(output_dir) as staging:
        write_json_atomic(staging / DEPLOYMENT_FILE, record)
        (staging / MANIFESTS_FILE).write_text(yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False))
        held_out.save(staging / HELD_OUT_DIR)
