"""The ``deployment`` target: a Deployment, a Service and a HorizontalPodAutoscaler (``manifests``), applied with
server-side apply, rolled out by ``kubectl rollout status``'s rules, rolled back to the spec recorded on the
Deployment, and canaries as a second Deployment behind the same Service.

What this library applied is recorded on the Deployment (``kfp-torch-lifecycle/applied``: the three objects as
sent, without this library's annotations) together with what it replaced (``kfp-torch-lifecycle/previous``) and a
fingerprint of the settings. ``current`` reads them back; ``rollback`` applies the previous objects again (so a
later step, or a person with kubectl, can roll back from the object alone); ``apply`` of a request whose
fingerprint and image match what serves sends nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from components.deploy import manifests
from components.deploy.kube_client import DEPLOYMENTS, HPAS, SERVICES, DeployApi, Kind
from components.deploy.rollout import deployment_status, pod_report
from components.deploy.target import (
    Applied,
    DeployRequest,
    Revision,
    RolloutFailed,
    ServiceAddress,
    UrlResolver,
    in_cluster_url,
)

KINDS = {"Deployment": DEPLOYMENTS, "Service": SERVICES, "HorizontalPodAutoscaler": HPAS}
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"  # set by the Deployment controller


class DeploymentTarget:
    """Serves ``namespace/name`` as a Deployment behind a Service, scaled by a HorizontalPodAutoscaler."""

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
        self.canary_name = f"{name}-canary"

    # --- the Target protocol ---------------------------------------------------------------------------------

    def current(self) -> Revision | None:
        live = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        return _revision(live) if live else None

    def apply(self, request: DeployRequest) -> Applied:
        self._check(request)
        if request.canary:
            return self._apply_canary(request)
        desired = [manifests.deployment(request), manifests.service(request), manifests.autoscaler(request)]
        fingerprint = manifests.fingerprint(desired)
        live = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        previous = _revision(live) if live else None
        if live and self._unchanged(live, fingerprint, request.image):
            marker = {"deployment": self.name, "service": self.name, "min_replicas": request.min_replicas,
                      "template": _template_label(live), "image": request.image}  # fmt: skip
            return Applied(request, False, previous, tuple(desired), marker)
        applied_before = _annotations(live).get(manifests.APPLIED_ANNOTATION, "") if live else ""
        sent = self._apply_all(desired, applied_before, fingerprint)
        marker = {"deployment": self.name, "service": self.name, "min_replicas": request.min_replicas,
                  "template": _template_label(sent[0]), "image": request.image}  # fmt: skip
        return Applied(request, True, previous, tuple(sent), marker)

    def wait_ready(self, applied: Applied, deadline: float) -> str:
        marker = applied.marker
        self._wait(marker["deployment"], marker["template"], marker["min_replicas"], deadline)
        address = ServiceAddress(
            name=marker["service"],
            namespace=self.namespace,
            host=f"{marker['service']}.{self.namespace}.svc.cluster.local",
            port=manifests.SERVICE_PORT,
            image=marker["image"],
            revision=marker["template"],
        )
        return self.resolve_url(address)

    def rollback(self, previous: Revision, deadline: float) -> None:
        objects = list(previous.manifests) or self._recorded_previous()
        if not objects:
            raise RolloutFailed(f"Deployment {self.namespace}/{self.name} records no earlier revision to roll back to")
        live = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        applied_before = _annotations(live).get(manifests.APPLIED_ANNOTATION, "") if live else ""
        sent = self._apply_all(objects, applied_before, manifests.fingerprint(objects))
        min_replicas = next((o["spec"]["minReplicas"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"), 1)
        try:
            self._wait(self.name, _template_label(sent[0]), min_replicas, deadline)
        except RolloutFailed as error:
            raise RolloutFailed(f"the rollback to {previous.image} did not become healthy: {error}") from error
        self.echo(f"Deployment {self.namespace}/{self.name}: back on {previous.image}, rolled out")

    def remove(self) -> None:
        for kind, name in (
            (HPAS, self.name),
            (SERVICES, self.canary_name),
            (DEPLOYMENTS, self.canary_name),
            (SERVICES, self.name),
            (DEPLOYMENTS, self.name),
        ):
            if self.api.delete(kind, self.namespace, name):
                self.echo(f"deleted {kind.kind} {self.namespace}/{name}")

    # --- canaries --------------------------------------------------------------------------------------------

    def promote_canary(self, request: DeployRequest, deadline: float) -> str:
        """The stable Deployment moves to the canary's image (a normal rolling update, recorded for rollback),
        then the canary Deployment and its Service go."""
        stable = dataclasses.replace(request, canary_percent=None)
        applied = self.apply(stable)
        url = self.wait_ready(applied, deadline)
        self._remove_canary()
        return url

    def rollback_canary(self, request: DeployRequest, deadline: float) -> None:
        self._remove_canary()
        live = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        if live is None:
            raise RolloutFailed(f"Deployment {self.namespace}/{self.name} is gone: nothing serves")
        min_replicas = _recorded_min_replicas(live)
        self._wait(self.name, _template_label(live), min_replicas, deadline)

    def _apply_canary(self, request: DeployRequest) -> Applied:
        live = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        if live is None:
            raise RolloutFailed(f"a canary needs Deployment {self.namespace}/{self.name} serving; it does not exist")
        stable_replicas = (live.get("spec") or {}).get("replicas") or 1
        replicas = manifests.canary_replicas(stable_replicas, request.canary_percent)
        desired = [
            manifests.deployment(request, self.canary_name, track="canary", replicas=replicas),
            manifests.service(request, self.canary_name, track="canary"),
        ]
        for body in desired:
            self.api.apply(KINDS[body["kind"]], body)
        self.echo(
            f"canary Deployment {self.namespace}/{self.canary_name}: {replicas} replica(s) beside {stable_replicas} "
            f"stable, about {100 * replicas / (replicas + stable_replicas):.0f}% of the traffic of Service {self.name}"
        )
        marker = {"deployment": self.canary_name, "service": self.canary_name, "min_replicas": replicas,
                  "template": _template_label(desired[0]), "image": request.image}  # fmt: skip
        return Applied(request, True, _revision(live), tuple(desired), marker)

    def _remove_canary(self) -> None:
        for kind in (SERVICES, DEPLOYMENTS):
            if self.api.delete(kind, self.namespace, self.canary_name):
                self.echo(f"deleted {kind.kind} {self.namespace}/{self.canary_name}")

    # --- helpers ---------------------------------------------------------------------------------------------

    def _check(self, request: DeployRequest) -> None:
        request.validate()
        if (request.target, request.namespace, request.name) != ("deployment", self.namespace, self.name):
            raise ValueError(
                f"this target serves deployment {self.namespace}/{self.name}, not {request.target} "
                f"{request.namespace}/{request.name}"
            )

    def _unchanged(self, live: dict, fingerprint: str, image: str) -> bool:
        """The same settings were applied last, the image serves, and the Service and autoscaler are there."""
        if _annotations(live).get(manifests.FINGERPRINT_ANNOTATION) != fingerprint or _image(live) != image:
            return False
        return all(self.api.get(kind, self.namespace, self.name) is not None for kind in (SERVICES, HPAS))

    def _apply_all(self, objects: list[dict], applied_before: str, fingerprint: str) -> list[dict]:
        """Apply the Deployment (annotated with what it is and what it replaced), then the others; what was sent."""
        sent = []
        for body in objects:
            if body["kind"] == "Deployment":
                body = manifests.with_history(body, objects, applied_before, fingerprint)
            self.api.apply(KINDS[body["kind"]], body)
            sent.append(body)
        return sent

    def _recorded_previous(self) -> list[dict]:
        live = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        recorded = _annotations(live).get(manifests.PREVIOUS_ANNOTATION, "") if live else ""
        return json.loads(recorded) if recorded else []

    def _wait(self, name: str, template: str, min_replicas: int, deadline: float) -> None:
        """Until ``name`` is rolled out (kubectl's rules), or ``RolloutFailed`` with its pods' reasons."""
        said = ""
        while True:
            live = self.api.get(DEPLOYMENTS, self.namespace, name)
            if live is None:
                raise RolloutFailed(f"Deployment {self.namespace}/{name} was deleted while its rollout was awaited")
            progress = deployment_status(live, min_replicas)
            if progress.done:
                self.echo(progress.message)
                return
            if progress.failed or time.monotonic() >= deadline:
                head = progress.message if progress.failed else f"the deadline passed; {progress.message}"
                report = pod_report(
                    self.api, self.namespace, f"{manifests.TEMPLATE_LABEL}={template}", owner_prefix=name
                )
                raise RolloutFailed(f"{head}\n{report}" if report else head)
            if progress.message != said:
                self.echo(progress.message)
                said = progress.message
            time.sleep(max(0.0, min(self.poll_seconds, deadline - time.monotonic())))


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _containers(obj: dict[str, Any]) -> list[dict]:
    return (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []


def _image(obj: dict[str, Any]) -> str:
    containers = _containers(obj)
    chosen = next((c for c in containers if c.get("name") == manifests.CONTAINER), containers[0] if containers else {})
    return chosen.get("image", "")


def _template_label(obj: dict[str, Any]) -> str:
    template = (obj.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("labels") or {}).get(manifests.TEMPLATE_LABEL, "")


def _recorded_min_replicas(live: dict) -> int:
    recorded = _annotations(live).get(manifests.APPLIED_ANNOTATION, "")
    objects = json.loads(recorded) if recorded else []
    return next((o["spec"]["minReplicas"] for o in objects if o.get("kind") == "HorizontalPodAutoscaler"), 1)


def _revision(live: dict[str, Any]) -> Revision:
    metadata = live["metadata"]
    number = _annotations(live).get(REVISION_ANNOTATION)
    name = f"revision {number}" if number else f"generation {metadata.get('generation', '?')}"
    recorded = _annotations(live).get(manifests.APPLIED_ANNOTATION, "")
    return Revision(_image(live), name, tuple(json.loads(recorded)) if recorded else ())


__all__ = ["DeploymentTarget", "Kind"]
