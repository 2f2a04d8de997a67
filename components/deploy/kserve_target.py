"""The ``kserve`` target: a ``serving.kserve.io/v1beta1`` InferenceService applied with server-side apply, judged
rolled out by KServe's own status, rolled back to the spec recorded on it.

Rolled out (KServe's status code, ``pkg/apis/serving/v1beta1/inference_service_status.go``):
- ``status.observedGeneration`` has caught up with ``metadata.generation``, and ``Ready`` and ``PredictorReady``
  are True;
- Knative mode: the predictor's ``latestCreatedRevision`` is a new revision (not the one serving before the
  apply) and equals ``latestReadyRevision``; for a canary, the traffic gives that revision its share. A
  ``PredictorReady`` False with a message for the new revision (``RevisionFailed``: the container exited, ...) is
  a failure;
- Standard mode has no revisions, and ``PredictorReady`` stays True while the old pods serve during a rolling
  update; so the predictor's Deployment (``<name>-predictor``) is judged by ``kubectl rollout status``'s rules,
  with the new image.

Rollback applies the InferenceService recorded in ``kfp-torch-lifecycle/previous`` (the last ready revision's
spec); in Knative mode the traffic never left the last ready revision while the new one failed, and the rollback
makes a revision of the previous spec that takes all of it. A canary (Knative mode only: KServe applies
``canaryTrafficPercent`` to Knative revisions only, 0.15 to 0.20) is reached through its ``latest`` tag route
(``serving.kserve.io/enable-tag-routing``); promoting it drops ``canaryTrafficPercent``, rolling it back applies the
stable spec again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from components.deploy import manifests
from components.deploy.kube_client import DEPLOYMENTS, INFERENCE_SERVICES, DeployApi
from components.deploy.rollout import Progress, deployment_status, pod_report
from components.deploy.target import (
    Applied,
    DeployRequest,
    Revision,
    RolloutFailed,
    ServiceAddress,
    UrlResolver,
    in_cluster_url,
)

TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"


class KServeTarget:
    """Serves ``namespace/name`` as a KServe InferenceService."""

    def __init__(
        self,
        api: DeployApi,
        namespace: str,
        name: str,
        resolve_url: UrlResolver = in_cluster_url,
        poll_seconds: float = 2.0,
        echo: Callable[[str], None] = print,
    ):
        self.api, self.namespace, self.name = api, namespace, name
        self.resolve_url, self.poll_seconds, self.echo = resolve_url, poll_seconds, echo

    # --- the Target protocol ---------------------------------------------------------------------------------

    def current(self) -> Revision | None:
        live = self.api.get(INFERENCE_SERVICES, self.namespace, self.name)
        return _revision(live) if live else None

    def apply(self, request: DeployRequest) -> Applied:
        request.validate()
        if (request.target, request.namespace, request.name) != ("kserve", self.namespace, self.name):
            raise ValueError(f"this target serves kserve {self.namespace}/{self.name}, not {request.target} "
                             f"{request.namespace}/{request.name}")  # fmt: skip
        desired = inference_service(request)
        fingerprint = manifests.fingerprint([desired])
        live = self.api.get(INFERENCE_SERVICES, self.namespace, self.name)
        previous = _revision(live) if live else None
        marker = {
            "image": request.image,
            "mode": request.mode,
            "canary": request.canary_percent,
            "template": _template(desired),
            # a new revision is awaited only when the revision's template changes (not the traffic alone)
            "revision_before": _predictor(live).get("latestCreatedRevision", "")
            if live and _template(live) != _template(desired)
            else "",
        }
        unchanged = _annotations(live).get(manifests.FINGERPRINT_ANNOTATION) == fingerprint
        if live and unchanged and _image(live) == request.image:
            return Applied(request, False, previous, (desired,), {**marker, "revision_before": ""})
        body = self._apply(desired, live)
        return Applied(request, True, previous, (body,), marker)

    def wait_ready(self, applied: Applied, deadline: float) -> str:
        marker = applied.marker
        live = self._wait(marker, deadline)
        predictor = _predictor(live)
        revision = predictor.get("latestReadyRevision", "")
        ksvc = f"{self.name}-predictor"
        tagged = marker["canary"] is not None
        address = ServiceAddress(
            name=ksvc,
            namespace=self.namespace,
            host=f"{'latest-' if tagged else ''}{ksvc}.{self.namespace}.svc.cluster.local",
            port=80,
            image=marker["image"],
            revision=revision,
        )
        return self.resolve_url(address)

    def rollback(self, previous: Revision, deadline: float) -> None:
        objects = list(previous.manifests) or self._recorded_previous()
        if not objects:
            raise RolloutFailed(
                f"InferenceService {self.namespace}/{self.name} records no earlier spec to roll back to"
            )
        live = self.api.get(INFERENCE_SERVICES, self.namespace, self.name)
        body = self._apply(objects[0], live)
        changed = live is None or _template(live) != _template(body)
        marker = {"image": previous.image, "mode": _mode(body), "canary": None, "template": _template(body),
                  "revision_before": _predictor(live).get("latestCreatedRevision", "") if changed else ""}  # fmt: skip
        try:
            self._wait(marker, deadline)
        except RolloutFailed as error:
            raise RolloutFailed(f"the rollback to {previous.image} did not become healthy: {error}") from error
        self.echo(f"InferenceService {self.namespace}/{self.name}: back on {previous.image}, ready")

    def remove(self) -> None:
        if self.api.delete(INFERENCE_SERVICES, self.namespace, self.name):
            self.echo(f"deleted InferenceService {self.namespace}/{self.name}")

    # --- canaries (Knative mode) -----------------------------------------------------------------------------

    def promote_canary(self, request: DeployRequest, deadline: float) -> str:
        """All traffic to the canary's revision: the same spec without ``canaryTrafficPercent``."""
        return self.wait_ready(self.apply(dataclasses.replace(request, canary_percent=None)), deadline)

    def rollback_canary(self, request: DeployRequest, deadline: float) -> None:
        live = self.api.get(INFERENCE_SERVICES, self.namespace, self.name)
        previous = _revision_from(_annotations(live).get(manifests.PREVIOUS_ANNOTATION, "")) if live else None
        if previous is None:
            raise RolloutFailed(f"InferenceService {self.namespace}/{self.name} records no stable spec to return to")
        self.rollback(previous, deadline)

    # --- helpers ---------------------------------------------------------------------------------------------

    def _apply(self, desired: dict, live: dict | None) -> dict:
        applied_before = _annotations(live).get(manifests.APPLIED_ANNOTATION, "") if live else ""
        body = manifests.with_history(desired, [desired], applied_before, manifests.fingerprint([desired]))
        self.api.apply(INFERENCE_SERVICES, body)
        return body

    def _recorded_previous(self) -> list[dict]:
        live = self.api.get(INFERENCE_SERVICES, self.namespace, self.name)
        recorded = _annotations(live).get(manifests.PREVIOUS_ANNOTATION, "") if live else ""
        return json.loads(recorded) if recorded else []

    def _wait(self, marker: dict, deadline: float) -> dict:
        said = ""
        while True:
            live = self.api.get(INFERENCE_SERVICES, self.namespace, self.name)
            if live is None:
                raise RolloutFailed(f"InferenceService {self.namespace}/{self.name} was deleted while awaited")
            progress = self._progress(live, marker)
            if progress.done:
                self.echo(progress.message)
                return live
            if progress.failed or time.monotonic() >= deadline:
                head = progress.message if progress.failed else f"the deadline passed; {progress.message}"
                report = pod_report(self.api, self.namespace, f"{manifests.TEMPLATE_LABEL}={marker['template']}",
                                    owner_prefix=f"{self.name}-predictor")  # fmt: skip
                raise RolloutFailed(f"{head}\n{report}" if report else head)
            if progress.message != said:
                self.echo(progress.message)
                said = progress.message
            time.sleep(max(0.0, min(self.poll_seconds, deadline - time.monotonic())))

    def _progress(self, live: dict, marker: dict) -> Progress:
        what = f"InferenceService {self.namespace}/{self.name}"
        status = live.get("status") or {}
        # KServe reports the observedGeneration of what it runs the predictor on: the Knative Service, which follows
        # every spec change; in Standard mode the Deployment, which a change of scaling alone leaves as it is (its
        # own generation is checked below, by kubectl's rules).
        if marker["mode"] == "knative" and live["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
            return Progress(False, f"Waiting for {what}'s spec update to be observed...")
        ready, predictor_ready = _condition(status, "Ready"), _condition(status, "PredictorReady")
        predictor = _predictor(live)
        created, ready_revision = predictor.get("latestCreatedRevision", ""), predictor.get("latestReadyRevision", "")
        if marker["mode"] == "knative":
            if marker["revision_before"] and created == marker["revision_before"]:
                return Progress(False, f"Waiting for {what} to create a new revision...")
            if (
                predictor_ready.get("status") == "False"
                and created != ready_revision
                and predictor_ready.get("message")
            ):
                return Progress(False, f"{what}: revision {created} failed: {predictor_ready.get('reason', '')}: "
                                       f"{predictor_ready.get('message', '')}", failed=True)  # fmt: skip
            if created != ready_revision:
                return Progress(False, f"Waiting for {what}'s revision {created} to become ready...")
            wanted = 100 if marker["canary"] is None else marker["canary"]
            share = sum(
                t.get("percent") or 0 for t in predictor.get("traffic") or [] if t.get("revisionName") == created
            )
            if share != wanted:
                return Progress(False, f"Waiting for {what}'s revision {created} to get {wanted}% of the traffic (has "
                                       f"{share}%)...")  # fmt: skip
        if ready.get("status") != "True" or predictor_ready.get("status") != "True":
            detail = predictor_ready.get("message") or ready.get("message") or "no message"
            return Progress(False, f"Waiting for {what} to be Ready ({detail})...")
        if marker["mode"] == "standard":
            deployment = self.api.get(DEPLOYMENTS, self.namespace, f"{self.name}-predictor")
            if deployment is None:
                return Progress(False, f"Waiting for {what}'s predictor Deployment...")
            if _image(deployment, template=True) != marker["image"]:
                return Progress(False, f"Waiting for {what}'s predictor Deployment to take the new image...")
            rolled = deployment_status(deployment)
            if not rolled.done:
                return rolled
        where = f" revision {ready_revision}" if ready_revision else ""
        return Progress(True, f"{what}{where} is ready")


def inference_service(request: DeployRequest) -> dict:
    """The InferenceService of ``request``, its predictor pods labelled with the template's digest, and the
    canary's tag route switched on (Knative serves it at ``latest-<name>-predictor``)."""
    body = manifests.inference_service(request)
    predictor = body["spec"]["predictor"]
    # A revision's template leaves the traffic out: a change of canaryTrafficPercent alone makes no new revision.
    revision_template = {key: value for key, value in predictor.items() if key != "canaryTrafficPercent"}
    predictor["labels"] = {manifests.TEMPLATE_LABEL: manifests.template_digest(revision_template)}
    if request.canary_percent is not None:
        body["metadata"]["annotations"][TAG_ROUTING_ANNOTATION] = "true"
    return body


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _predictor(live: dict | None) -> dict:
    return (((live or {}).get("status") or {}).get("components") or {}).get("predictor") or {}


def _mode(obj: dict) -> str:
    annotation = _annotations(obj).get(manifests.KSERVE_MODE_ANNOTATION, "")
    return "knative" if annotation in ("Knative", "Serverless") else "standard"


def _template(obj: dict) -> str:
    return ((obj.get("spec") or {}).get("predictor") or {}).get("labels", {}).get(manifests.TEMPLATE_LABEL, "")


def _image(obj: dict, template: bool = False) -> str:
    if template:
        containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    else:
        containers = ((obj.get("spec") or {}).get("predictor") or {}).get("containers") or []
    return containers[0].get("image", "") if containers else ""


def _revision(live: dict) -> Revision:
    predictor = _predictor(live)
    name = predictor.get("latestReadyRevision") or f"generation {live['metadata'].get('generation', '?')}"
    recorded = _annotations(live).get(manifests.APPLIED_ANNOTATION, "")
    return Revision(_image(live), name, tuple(json.loads(recorded)) if recorded else ())


def _revision_from(recorded: str) -> Revision | None:
    if not recorded:
        return None
    objects = json.loads(recorded)
    return Revision(_image(objects[0]), "the recorded stable spec", tuple(objects))
