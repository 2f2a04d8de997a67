"""KServe's InferenceService controller (0.15.2 or 0.20.0) as a controller of the fake API server, from kserve/kserve's
source: ``pkg/controller/v1beta1/inferenceservice`` (``controller.go``, ``utils.GetDeploymentMode``, the Knative
``ksvc_reconciler.go``) and ``pkg/apis/serving/v1beta1/inference_service_status.go`` (``PropagateStatus``,
``PropagateRawStatus``).

- The resource is served as the release's CRD defines it; every apply is checked against that CRD strictly (422).
- The mode comes from ``serving.kserve.io/deploymentMode`` as the release reads it: 0.15 knows RawDeployment,
  Serverless and ModelMesh and takes the cluster's default (``default_mode``, Serverless as KServe ships) for any
  other value, such as 0.17's Standard; 0.20 also reads the old names as Standard and Knative. The mode is fixed at
  creation (``status.deploymentMode``): changing it is refused as KServe's webhook refuses it.
- Standard (RawDeployment) mode: the predictor is a Deployment ``<name>-predictor`` (``fake_apps``' controller runs
  it, with ``minReplicas`` replicas); ``PredictorReady`` follows its ``Available`` and ``Progressing`` conditions as
  ``PropagateRawStatus`` does (True while old pods keep it available during a rollout), and ``observedGeneration``
  is the Deployment's.
- Knative mode: each spec change is a revision ``<name>-predictor-0000N``, ready ``pod_seconds`` after it is
  observed when its image serves; a crashing image fails its revision at once (``ContainerHealthy`` False with
  the exit code, as Knative's revision reconciler marks it); an image that cannot be pulled or scheduled leaves it
  Unknown. Traffic goes to the latest ready revision, or, with ``canaryTrafficPercent`` and a rolled-out revision,
  that share to the latest (tag ``latest``) and the rest to the last rolled-out one (tag ``prev``); the
  predictor's ``latestCreatedRevision``, ``latestReadyRevision``, ``latestRolledoutRevision``,
  ``previousRolledoutRevision`` and ``traffic`` follow ``PropagateStatus``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tests.support.fake_apps import (
    AppliedController,
    Behaviour,
    DeploymentController,
    SimPod,
    Workloads,
    pod_status,
)
from tests.support.fake_kube import Resource, StoredObject

CRDS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "crds"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DOMAIN = "example.com"  # KServe's default ingress domain


def crd(release: str) -> Path:
    return CRDS / f"serving.kserve.io_inferenceservices.v{release}.yaml"


@functools.cache
def served(release: str) -> Resource:
    """The resource as the release's CRD defines it (read once: the CRD is megabytes of YAML)."""
    return Resource.from_crd(crd(release), "v1beta1")


class KServeController(AppliedController):
    """InferenceServices of one KServe release."""

    def __init__(
        self,
        workloads: Workloads,
        deployments: DeploymentController,
        release: str = "0.20.0",
        default_mode: str = "Serverless",
    ):
        super().__init__()
        self.resource = served(release)
        self.kserve_release, self.workloads, self.deployments = release, workloads, deployments
        self.default_mode = default_mode
        self.renamed = tuple(int(part) for part in release.split(".")[:2]) >= (0, 17)

    # KServe's mode rules (utils.GetDeploymentMode, validateDeploymentMode)
    def resolve_mode(self, annotations: dict) -> str:
        value = annotations.get(MODE_ANNOTATION, "")
        if self.renamed:
            value = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(value, value)
            known = ("Standard", "Knative", "ModelMesh")
            default = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(self.default_mode, self.default_mode)
        else:
            known, default = ("RawDeployment", "Serverless", "ModelMesh"), self.default_mode
        return value if value in known else default

    def knative(self, obj: StoredObject) -> bool:
        obj.state.setdefault("mode", self.resolve_mode(obj.body["metadata"].get("annotations") or {}))
        return obj.state["mode"] in ("Knative", "Serverless")

    def validate(self, body: dict, live: dict | None) -> list[str]:
        predictor = (body.get("spec") or {}).get("predictor") or {}
        found = [] if predictor.get("containers") or predictor.get("model") else ["no predictor container or model"]
        if live is not None:
            recorded = (self.objects[(live["metadata"]["namespace"], live["metadata"]["name"])]).state.get("mode")
            annotation = (body["metadata"].get("annotations") or {}).get(MODE_ANNOTATION)
            if self.renamed and recorded:
                recorded = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(recorded, recorded)
            if recorded and annotation is not None and annotation != recorded:
                found.append(f"update rejected: deploymentMode cannot be changed from '{recorded}' to '{annotation}'")
        return found

    def spec_changed(self, obj: StoredObject, before: dict | None, now: float) -> None:
        self.knative(obj)  # the mode is fixed when the object is first seen
        predictor = obj.body["spec"]["predictor"]
        container = predictor["containers"][0]
        generation = obj.body["metadata"]["generation"]
        obj.state.setdefault("generations", []).append((now, generation))
        if self.knative(obj):
            revisions = obj.state.setdefault("revisions", [])
            template = {key: value for key, value in predictor.items() if key != "canaryTrafficPercent"}
            obj.state.setdefault("routes", []).append((now, predictor.get("canaryTrafficPercent")))
            if revisions and revisions[-1]["template"] == template:
                return  # the traffic alone changed: Knative makes no revision
            revisions.append(
                {
                    "name": f"{obj.name}-predictor-{len(revisions) + 1:05d}",
                    "at": now,
                    "image": container["image"],
                    "labels": dict(predictor.get("labels") or {}),
                    "replicas": predictor.get("minReplicas", 1),
                    "template": template,
                }
            )
        else:
            self._reconcile_raw(obj, now)

    def _reconcile_raw(self, obj: StoredObject, now: float) -> None:
        """The predictor's Deployment, created or updated as KServe's raw reconciler does (its own Update)."""
        predictor = obj.body["spec"]["predictor"]
        name = f"{obj.name}-predictor"
        labels = {**(predictor.get("labels") or {}), "serving.kserve.io/inferenceservice": obj.name,
                  "app": f"isvc.{name}", "component": "predictor"}  # fmt: skip
        pod_spec = {"containers": predictor["containers"]}
        for key in ("serviceAccountName", "imagePullSecrets"):
            if key in predictor:
                pod_spec[key] = predictor[key]
        spec = {
            "replicas": predictor.get("minReplicas", 1),
            "selector": {"matchLabels": {"app": f"isvc.{name}"}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        }
        existing = self.deployments.existing(obj.namespace, name, now)
        if existing is None or existing.deleted:
            body = {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": obj.namespace, "generation": 1}, "spec": spec}  # fmt: skip
            code, _ = self.server.create(self.deployments, body)
            assert code == 201, code
            self.deployments.spec_changed(self.deployments.objects[(obj.namespace, name)], None, now)
        elif existing.body["spec"] != {**existing.body["spec"], **spec}:
            existing.body["spec"].update(spec)
            existing.body["metadata"]["generation"] += 1
            self.deployments.spec_changed(existing, None, now)

    def on_delete(self, obj: StoredObject, now: float) -> None:
        dependent = self.deployments.existing(obj.namespace, f"{obj.name}-predictor", now)
        if dependent is not None and not dependent.deleted:
            dependent.deletion_requested_at, dependent.propagation = now, "Background"

    # status
    def status(self, obj: StoredObject, now: float) -> dict:
        with self.workloads.lock:
            if self.knative(obj):
                return self._knative_status(obj, now)
            return self._raw_status(obj, now)

    def _raw_status(self, obj: StoredObject, now: float) -> dict:
        deployment = self.deployments.existing(obj.namespace, f"{obj.name}-predictor", now)
        status = self.deployments.status(deployment, now) if deployment else {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        available, progressing = conditions.get("Available"), conditions.get("Progressing")
        ready = ("False", "", "")
        if available and available["status"] == "True":
            ready = ("True", available["reason"], available["message"])
        if progressing:
            if progressing["status"] == "False" and progressing.get("message"):
                ready = ("False", progressing["reason"], progressing["message"])
            elif progressing["reason"] == "NewReplicaSetAvailable":
                ready = ("True", progressing["reason"], progressing["message"])
            elif not available or available["status"] != "True":
                ready = ("Unknown", progressing["reason"], progressing["message"])
        if available and available["status"] == "False":
            ready = ("False", available["reason"], available["message"])
        predictor = {"url": f"http://{obj.name}-predictor-{obj.namespace}.{DOMAIN}"} if ready[0] == "True" else {}
        result = self._common(obj, ready, ("True", "", ""), predictor)
        result["observedGeneration"] = status.get("observedGeneration", 0)
        return result

    def _knative_status(self, obj: StoredObject, now: float) -> dict:
        observed = [r for r in obj.state.get("revisions", []) if r["at"] + self.workloads.observe_seconds <= now]
        if not observed:
            return {"deploymentMode": obj.state["mode"]}
        latest = observed[-1]
        ready = [r for r in observed if self._revision_state(r, now) == "ready"]
        latest_ready = ready[-1]["name"] if ready else ""
        routes = [percent for at, percent in obj.state["routes"] if at + self.workloads.observe_seconds <= now]
        canary = routes[-1] if routes else None
        rolled = obj.state.setdefault("rolled_out", ["", ""])  # [latest, previous]
        # traffic, as the ksvc reconciler routes it and Knative resolves latestRevision to the latest ready one
        traffic = []
        if latest_ready:
            if canary is not None and rolled[0]:
                traffic.append(self._route(obj, latest_ready, canary, True, "latest"))
                if canary < 100:
                    traffic.append(self._route(obj, rolled[0], 100 - canary, False, "prev"))
            else:
                traffic.append(self._route(obj, latest_ready, 100, True, ""))
        for route in traffic:  # PropagateStatus: a ready revision at 100% as the latest is rolled out
            if route["latestRevision"] and route["revisionName"] == latest_ready and route["percent"] == 100:
                if rolled[0] != latest_ready:
                    rolled[:] = [latest_ready, rolled[0]]
        state = self._revision_state(latest, now)
        if state == "ready":
            predictor_ready = ("True", "", "")
        elif state == "failed":
            message = self._failure(latest)
            predictor_ready = (
                "False",
                "RevisionFailed",
                f'Revision "{latest["name"]}" failed with message: {message}.',
            )
        else:
            waiting = f'Configuration "{obj.name}-predictor" is waiting for a Revision to become ready.'
            predictor_ready = ("Unknown", "RevisionMissing", waiting)
        predictor = {
            "latestCreatedRevision": latest["name"],
            **({"latestReadyRevision": latest_ready} if latest_ready else {}),
            **({"latestRolledoutRevision": rolled[0]} if rolled[0] else {}),
            **({"previousRolledoutRevision": rolled[1]} if rolled[1] else {}),
            "traffic": traffic,
            **({"url": f"http://{obj.name}-predictor-{obj.namespace}.{DOMAIN}"} if latest_ready else {}),
        }
        result = self._common(obj, predictor_ready, ("True", "", "") if latest_ready else ("Unknown", "", ""),
                              predictor)  # fmt: skip
        generations = [g for at, g in obj.state["generations"] if at + self.workloads.observe_seconds <= now]
        result["observedGeneration"] = generations[-1] if generations else 0
        return result

    def _common(self, obj: StoredObject, predictor_ready: tuple, ingress: tuple, predictor: dict) -> dict:
        stamp = obj.stamp(0)
        happy = predictor_ready[0] == "True" and ingress[0] == "True"
        ready = ("True", "", "") if happy else (
            predictor_ready if predictor_ready[0] != "True" else ingress)  # fmt: skip

        def condition(kind: str, values: tuple) -> dict:
            found = {"type": kind, "status": values[0], "lastTransitionTime": stamp}
            return found | ({"reason": values[1]} if values[1] else {}) | ({"message": values[2]} if values[2] else {})

        url = f"http://{obj.name}-{obj.namespace}.{DOMAIN}" if happy else None
        return {
            "deploymentMode": obj.state["mode"],
            "conditions": [
                condition("IngressReady", ingress),
                condition("PredictorReady", predictor_ready),
                condition("Ready", ready),
            ],  # fmt: skip
            "components": {"predictor": predictor},
            **(
                {"url": url, "address": {"url": f"http://{obj.name}-predictor.{obj.namespace}.svc.cluster.local"}}
                if url
                else {}
            ),  # fmt: skip
        }

    def _route(self, obj: StoredObject, revision: str, percent: int, latest: bool, tag: str) -> dict:
        route = {"revisionName": revision, "percent": percent, "latestRevision": latest}
        if tag:
            route |= {"tag": tag, "url": f"http://{tag}-{obj.name}-predictor-{obj.namespace}.{DOMAIN}"}
        return route

    def _behaviour(self, revision: dict) -> Behaviour | None:
        return self.workloads.behaviour(revision["image"])

    def _revision_state(self, revision: dict, now: float) -> str:
        behaviour = self._behaviour(revision)
        started = revision["at"] + self.workloads.observe_seconds + self.workloads.pod_seconds
        if now < started:
            return "pending"
        if behaviour is not None and behaviour.kind == "serves":
            return "ready"
        if behaviour is not None and behaviour.kind == "crashes":
            return "failed"
        return "pending"

    def _failure(self, revision: dict) -> str:
        log = self._behaviour(revision).log
        return f"Container failed with: {log[-1] if log else 'exit code 1'}"

    # pods and logs (Knative mode; Standard mode's pods are its Deployment's)
    def pods(self, obj: StoredObject, now: float) -> list[dict]:
        if not self.knative(obj):
            return []
        status = self._knative_status(obj, now)
        predictor = status.get("components", {}).get("predictor", {})
        serving = {route["revisionName"] for route in predictor.get("traffic", []) if route["percent"]}
        found = []
        for revision in obj.state.get("revisions", []):
            if revision["at"] + self.workloads.observe_seconds > now:
                continue
            if revision["name"] not in serving and revision["name"] != predictor.get("latestCreatedRevision"):
                continue  # scaled to zero
            created = revision["at"] + self.workloads.observe_seconds
            behaviour = self._behaviour(revision)
            ready_at = created + self.workloads.pod_seconds if behaviour and behaviour.kind == "serves" else None
            labels = {**revision["labels"], "serving.knative.dev/revision": revision["name"],
                      "serving.kserve.io/inferenceservice": obj.name, "component": "predictor"}  # fmt: skip
            for index in range(revision["replicas"]):
                sim = SimPod(revision["name"], index, created, ready_at, behaviour, revision["image"])
                name = f"{revision['name']}-deployment-{index:05d}"
                status_ = pod_status(sim, now, "kserve-container")
                pod = self.server.pod(obj, name, labels, ["kserve-container"], revision["image"], status_)
                found.append(pod)
        return found

    def log(self, obj: StoredObject, pod_name: str, container: str) -> list[tuple[float, str]]:
        for revision in obj.state.get("revisions", []):
            behaviour = self._behaviour(revision)
            if pod_name.startswith(revision["name"]) and behaviour and behaviour.kind == "crashes":
                return [(0.0, line) for line in behaviour.log]
        return []
