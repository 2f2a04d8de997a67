"""Deployments, Services and HorizontalPodAutoscalers as controllers of the fake API server, behaving as
kube-controller-manager's do where the deploy targets depend on it (kubernetes/kubernetes ``pkg/controller/
deployment``: ``sync.go``, ``rolling.go``, ``progress.go``; ``pkg/controller/podautoscaler/horizontal.go``).

``Workloads`` says how each image behaves in a pod: it serves (ready one ``pod_seconds`` after its pod is created),
it crashes (``CrashLoopBackOff``, with the log lines it wrote), its pods cannot be scheduled (``Unschedulable`` with
the scheduler's message), or, for an image nobody registered, it cannot be pulled (``ImagePullBackOff``). Pods whose
ServiceAccount does not exist are never created: the ReplicaSet records a ``FailedCreate`` Warning event.

Every write is a server-side apply (``tests/support/server_side_apply.py``): field managers, conflicts, removal of
fields a manager stops sending, each body checked first against Kubernetes' strict schema and the API server's
validation of the kind (422). The ``generation`` grows with every change of ``spec``.

The Deployment controller, replayed from the Deployment's spec changes up to the moment it is read:
- a change is observed ``observe_seconds`` later (``status.observedGeneration``);
- each pod template is a ReplicaSet (``<name>-<pod-template-hash>``); a template seen before reuses its ReplicaSet,
  with a new revision (``deployment.kubernetes.io/revision``), as a rollback does;
- a rolling update with ``maxSurge`` 1 and ``maxUnavailable`` 0: at most one pod above ``spec.replicas``, old pods
  removed only while the available ones stay at ``spec.replicas`` (unhealthy old pods first, ``rolling.go``); a
  first rollout creates all its pods at once;
- ``status``: replicas, updated, ready and available counts; ``Available``; ``Progressing`` (``ReplicaSetUpdated``
  while pods are created or become ready, ``NewReplicaSetAvailable`` when done, and ``False`` with
  ``ProgressDeadlineExceeded`` after ``progressDeadlineSeconds`` without progress).

The HorizontalPodAutoscaler controller, ``sync_seconds`` after the autoscaler exists and whenever ``load`` asks for
another count, scales its Deployment within [minReplicas, maxReplicas] by writing ``spec.replicas`` through the scale
subresource as ``kube-controller-manager``, which takes that field's ownership (server-side apply's Update).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.support import server_side_apply as ssa
from tests.support.fake_kube import (
    CORE_VERBS,
    Controller,
    Resource,
    StoredObject,
    Subresource,
    _query_bool,
    container_status,
    rfc3339,
    status_body,
)
from tests.support.kube_schemas import problems

APPLY = "application/apply-patch+yaml"
HPA_MANAGER = "kube-controller-manager"


@dataclass(frozen=True)
class Behaviour:
    kind: str  # serves, crashes, unschedulable
    log: tuple[str, ...] = ()
    message: str = ""


@dataclass
class Workloads:
    """How images behave in pods, and what the namespace holds, shared by every workload controller."""

    pod_seconds: float = 0.05  # a serving pod is ready this long after it is created
    observe_seconds: float = 0.02  # a controller sees a spec change this long after it is written
    service_accounts: set[str] = field(default_factory=lambda: {"default"})
    images: dict[str, Behaviour] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()

    def serves(self, image: str) -> None:
        self.images[image] = Behaviour("serves")

    def crashes(self, image: str, log: list[str]) -> None:
        self.images[image] = Behaviour("crashes", tuple(log))

    def unschedulable(self, image: str, message: str = "0/3 nodes are available: 3 Insufficient cpu.") -> None:
        self.images[image] = Behaviour("unschedulable", message=message)

    def behaviour(self, image: str) -> Behaviour | None:
        """None: the image cannot be pulled."""
        return self.images.get(image)


# --- server-side apply, for every kind here ---------------------------------------------------------------------


class AppliedController(Controller):
    """A kind written with server-side apply only: schema and validation first (422), then field ownership."""

    patch_types = (APPLY,)
    kserve_release = "0.20.0"  # the CRD a KServe kind is checked against

    def validate(self, body: dict, live: dict | None) -> list[str]:
        """The API server's validation of the kind beyond its schema (``pkg/apis/<group>/validation``)."""
        return []

    def spec_changed(self, obj: StoredObject, before: dict | None, now: float) -> None:
        """The object's spec changed (or it was created): ``before`` is the spec it had."""

    def patch(self, obj, body, media_type, query, now):
        try:
            manager = query.get("fieldManager", [""])[0]
            force = _query_bool(query, "force")
        except ValueError as error:
            return 400, status_body(400, str(error))
        if not manager:
            return 400, status_body(400, "PATCH: fieldManager is required for apply requests")
        found = problems(body, self.kserve_release)
        if found:
            name = body["metadata"].get("name")
            return 422, status_body(422, f'{self.resource.kind} "{name}" is invalid: ' + "; ".join(found))
        live = obj.body if obj is not None else None
        stamp = rfc3339(_wall(now))
        with self.workloads.lock:
            state = obj.state if obj is not None else {}
            try:
                result = ssa.apply(state, copy.deepcopy(live) if live else None, body, manager, force, stamp)
            except ssa.Conflict as conflict:
                return 409, status_body(409, str(conflict), reason="Conflict")
            invalid = self.validate(result, live)
            if invalid:
                name = body["metadata"]["name"]
                return 422, status_body(422, f'{self.resource.kind} "{name}" is invalid: ' + "; ".join(invalid))
            if obj is None:
                result["metadata"]["generation"] = 1
                code, reply = self.server.create(self, result)
                if code != 201:
                    return code, reply
                created = self.objects[(result["metadata"]["namespace"], result["metadata"]["name"])]
                created.state.update(state)
                self.spec_changed(created, None, now)
                return 201, self.view(created, now)
            before = copy.deepcopy(live.get("spec"))
            kept = {k: live["metadata"][k] for k in ("uid", "creationTimestamp", "generation") if k in live["metadata"]}
            result["metadata"].update(kept)
            if result.get("spec") != before:
                result["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
            obj.body = result
            if result.get("spec") != before:
                self.spec_changed(obj, before, now)
            return 200, self.view(obj, now)

    def view(self, obj: StoredObject, now: float) -> dict:
        viewed = obj.as_object(self.status(obj, now))
        viewed["metadata"] = {**viewed["metadata"], "managedFields": ssa.managed_fields(obj.state)}
        viewed["metadata"]["resourceVersion"] = str(obj.state.get("resource_version", 1))
        return viewed


def _wall(monotonic: float) -> float:
    import time

    return time.time() - (time.monotonic() - monotonic)


# --- Deployments ------------------------------------------------------------------------------------------------


@dataclass
class SpecEvent:
    at: float
    generation: int
    template_hash: str
    replicas: int
    progress_deadline: float
    service_account: str
    image: str


@dataclass
class SimPod:
    template_hash: str
    index: int
    created: float
    ready_at: float | None  # None: never ready
    behaviour: Behaviour | None
    image: str


@dataclass
class Rollout:
    """The Deployment as its controller has made it by a moment: pods, the observed spec, the progress."""

    pods: list[SimPod]
    current: SpecEvent | None
    last_progress: float
    failed_create: bool = False


class DeploymentController(AppliedController):
    resource = Resource(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        singular="deployment",
        verbs=CORE_VERBS,
        short_names=("deploy",),
        categories=("all",),
        subresources=(
            Subresource("scale", "Scale", group="autoscaling", version="v1"),
            Subresource("status", "Deployment"),
        ),
    )

    def __init__(self, workloads: Workloads):
        super().__init__()
        self.workloads = workloads
        self.autoscalers: HorizontalPodAutoscalerController | None = None

    # admission and validation (k8s.io/kubernetes pkg/apis/apps/validation)
    def validate(self, body: dict, live: dict | None) -> list[str]:
        spec = body.get("spec", {})
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        found = []
        if any(template_labels.get(k) != v for k, v in selector.items()):
            found.append(f"spec.template.metadata.labels: Invalid value: {template_labels}: `selector` does not match "
                         "template `labels`")  # fmt: skip
        if live is not None and (live.get("spec") or {}).get("selector") != spec.get("selector"):
            found.append(f"spec.selector: Invalid value: {spec.get('selector')}: field is immutable")
        strategy = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        if strategy.get("maxUnavailable") == 0 and strategy.get("maxSurge") == 0:
            found.append("spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` "
                         "is 0")  # fmt: skip
        return found

    def spec_changed(self, obj: StoredObject, before: dict | None, now: float) -> None:
        spec = obj.body["spec"]
        spec.setdefault("replicas", 1)  # the API server's defaulting
        spec.setdefault("progressDeadlineSeconds", 600)
        template = spec["template"]
        template_hash = pod_template_hash(template)
        sets = obj.state.setdefault("replicasets", {})
        events = obj.state.setdefault("events", [])
        if template_hash not in sets or (events and events[-1].template_hash != template_hash):
            revision = max((s["revision"] for s in sets.values()), default=0) + 1
            sets[template_hash] = {"name": f"{obj.name}-{template_hash}", "revision": revision}
            annotations = obj.body["metadata"].setdefault("annotations", {})
            annotations["deployment.kubernetes.io/revision"] = str(revision)
        sets[template_hash]["labels"] = dict((template.get("metadata") or {}).get("labels") or {})
        sets[template_hash]["containers"] = template["spec"]["containers"]
        containers = template["spec"]["containers"]
        events.append(
            SpecEvent(
                at=now,
                generation=obj.body["metadata"]["generation"],
                template_hash=template_hash,
                replicas=spec["replicas"],
                progress_deadline=spec["progressDeadlineSeconds"],
                service_account=template["spec"].get("serviceAccountName", "default"),
                image=containers[0]["image"],
            )
        )
        obj.state["resource_version"] = obj.state.get("resource_version", 0) + 1

    def scale(self, obj: StoredObject, replicas: int, now: float) -> None:
        """The HorizontalPodAutoscaler's write of ``spec.replicas`` (through the scale subresource)."""
        stamp = rfc3339(_wall(now))
        ssa.update(obj.state, obj.body, ("spec", "replicas"), replicas, HPA_MANAGER, "autoscaling/v1", "scale", stamp)
        obj.body["metadata"]["generation"] += 1
        self.spec_changed(obj, None, now)

    # the controller, replayed
    def rollout(self, obj: StoredObject, now: float) -> Rollout:
        with self.workloads.lock:
            if self.autoscalers is not None:
                self.autoscalers.sync(now)
            return replay(obj.state.get("events", []), self.workloads, now)

    def status(self, obj: StoredObject, now: float) -> dict | None:
        rollout = self.rollout(obj, now)
        current = rollout.current
        if current is None:
            return {}
        pods = rollout.pods
        new = [p for p in pods if p.template_hash == current.template_hash]
        ready = [p for p in pods if _ready(p, now)]
        replicas = current.replicas
        rs_name = obj.state["replicasets"][current.template_hash]["name"]
        complete = len(new) == replicas and len(pods) == len(new) and all(_ready(p, now) for p in new)
        stamp = rfc3339(_wall(rollout.last_progress))
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif now - rollout.last_progress > current.progress_deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        available = len(ready) >= replicas  # maxUnavailable 0: minimum availability is all replicas
        conditions = [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            },
            {
                "type": "Progressing",
                "status": progressing[0],
                "reason": progressing[1],
                "message": progressing[2],
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            },
        ]
        return {
            "observedGeneration": current.generation,
            "replicas": len(pods),
            "updatedReplicas": len(new),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            **({"unavailableReplicas": replicas - len(ready)} if replicas > len(ready) else {}),
            "conditions": conditions,
        }

    def pods(self, obj: StoredObject, now: float) -> list[dict]:
        rollout = self.rollout(obj, now)
        sets = obj.state.get("replicasets", {})
        found = []
        for sim in rollout.pods:
            labels = {**sets[sim.template_hash]["labels"], "pod-template-hash": sim.template_hash}
            name = f"{sets[sim.template_hash]['name']}-{_suffix(sim.index)}"
            containers = [c["name"] for c in sets[sim.template_hash]["containers"]]
            pod = self.server.pod(obj, name, labels, containers, sim.image, pod_status(sim, now, containers[0]))
            found.append(pod)
        return found

    def log(self, obj: StoredObject, pod_name: str, container: str) -> list[tuple[float, str]]:
        for event in obj.state.get("events", []):
            behaviour = self.workloads.behaviour(event.image)
            if behaviour and behaviour.kind == "crashes" and event.template_hash in pod_name:
                return [(0.0, line) for line in behaviour.log]
        return []

    def events(self, obj: StoredObject, now: float) -> list[dict]:
        rollout = self.rollout(obj, now)
        if not rollout.failed_create or rollout.current is None:
            return []
        current = rollout.current
        replica_set = obj.state["replicasets"][current.template_hash]["name"]
        involved = {"kind": "ReplicaSet", "namespace": obj.namespace, "name": replica_set,
                    "uid": f"{obj.uid}-{current.template_hash}", "apiVersion": "apps/v1"}  # fmt: skip
        message = (
            f'Error creating: pods "{replica_set}-" is forbidden: error looking up service account '
            f'{obj.namespace}/{current.service_account}: serviceaccount "{current.service_account}" not found'
        )
        stamp = obj.stamp(current.at - obj.created_at + self.workloads.observe_seconds)
        return [self.server.event(involved, "FailedCreate", message, stamp, "Warning", "replicaset-controller")]


def pod_template_hash(template: dict) -> str:
    return hashlib.sha256(ssa_canonical(template).encode()).hexdigest()[:10]


def ssa_canonical(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _suffix(index: int) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    text = ""
    for _ in range(5):
        index, digit = divmod(index, len(alphabet))
        text += alphabet[digit]
    return text


def _ready(pod: SimPod, now: float) -> bool:
    return pod.ready_at is not None and pod.ready_at <= now


def replay(events: list[SpecEvent], workloads: Workloads, now: float) -> Rollout:
    """The Deployment controller's work from the first spec change it observed to ``now``: it acts when it sees a
    spec change or a pod turn ready, and again ``pod_seconds`` after each of its own changes."""
    delay, step = workloads.observe_seconds, workloads.pod_seconds
    observed = [e for e in events if e.at + delay <= now]
    if not observed:
        return Rollout([], None, now)
    pods: list[SimPod] = []
    counter, index = 0, 0
    t = previous = observed[0].at + delay
    current: SpecEvent | None = None
    last_progress, failed_create = t, False
    while True:
        changed = any(p.ready_at is not None and previous < p.ready_at <= t for p in pods)
        while index < len(observed) and observed[index].at + delay <= t:
            event = observed[index]
            if current is None or (event.template_hash, event.replicas) != (current.template_hash, current.replicas):
                changed = True
            current, index = event, index + 1
        replicas = current.replicas
        # the new ReplicaSet: down to spec.replicas (not-ready pods first), or up within maxSurge 1
        new = [p for p in pods if p.template_hash == current.template_hash]
        for pod in sorted(new, key=lambda p: _ready(p, t))[: max(0, len(new) - replicas)]:
            pods.remove(pod)
            changed = True
        new = [p for p in pods if p.template_hash == current.template_hash]
        others = len(pods) - len(new)
        wanted = min(replicas - len(new), replicas + 1 - len(pods)) if others else replicas - len(new)
        failed_create = wanted > 0 and current.service_account not in workloads.service_accounts
        if wanted > 0 and not failed_create:
            behaviour = workloads.behaviour(current.image)
            ready_at = t + step if behaviour is not None and behaviour.kind == "serves" else None
            for _ in range(wanted):
                pods.append(SimPod(current.template_hash, counter, t, ready_at, behaviour, current.image))
                counter += 1
            changed = True
        # old ReplicaSets down while the available pods stay at spec.replicas (rolling.go reconcileOldReplicaSets:
        # unhealthy old pods first, within allPods - minAvailable - newRSUnavailable)
        new_unavailable = sum(1 for p in pods if p.template_hash == current.template_hash and not _ready(p, t))
        budget = len(pods) - replicas - new_unavailable
        for pod in sorted([p for p in pods if p.template_hash != current.template_hash], key=lambda p: _ready(p, t)):
            available = sum(1 for p in pods if _ready(p, t))
            if budget <= 0 or (_ready(pod, t) and available - 1 < replicas):
                break
            pods.remove(pod)
            budget, changed = budget - 1, True
        if changed:
            last_progress = t
        upcoming = [p.ready_at for p in pods if p.ready_at is not None and p.ready_at > t]
        upcoming += [observed[index].at + delay] if index < len(observed) else []
        upcoming += [t + step] if changed else []
        following = min(upcoming, default=None)
        if following is None or following > now:
            return Rollout(pods, current, last_progress, failed_create)
        previous, t = t, following


def pod_status(pod: SimPod, now: float, container: str) -> dict:
    """A pod's status as the kubelet reports it, for how its image behaves."""
    image, behaviour = pod.image, pod.behaviour
    if behaviour is None:
        waiting = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
        return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [container_status(container, image, waiting)]}  # fmt: skip
    if behaviour.kind == "unschedulable":
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": behaviour.message}
        return {"phase": "Pending", "conditions": [condition]}
    if behaviour.kind == "crashes":
        waiting = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off 10s restarting failed container={container}"}}  # fmt: skip
        status = container_status(container, image, waiting)
        status["restartCount"] = 1 + int((now - pod.created) / 0.1)
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
        return {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [status]}
    if not _ready(pod, now):
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [container_status(container, image, waiting)]}  # fmt: skip
    running = container_status(container, image, {"running": {"startedAt": rfc3339(_wall(pod.created))}}, ready=True)
    return {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [running]}


# --- Services ---------------------------------------------------------------------------------------------------


class ServiceController(AppliedController):
    resource = Resource("", "v1", "services", "Service", singular="service", verbs=CORE_VERBS, short_names=("svc",),
                        categories=("all",), subresources=(Subresource("status", "Service"),))  # fmt: skip

    def __init__(self, workloads: Workloads):
        super().__init__()
        self.workloads = workloads
        self.addresses = iter(range(10, 250))

    def validate(self, body: dict, live: dict | None) -> list[str]:
        spec = body.get("spec", {})
        found = [] if spec.get("ports") else ["spec.ports: Required value"]
        if live is not None and "clusterIP" in spec and spec["clusterIP"] != live["spec"].get("clusterIP"):
            found.append(f"spec.clusterIP: Invalid value: {spec['clusterIP']!r}: field is immutable")
        return found

    def spec_changed(self, obj: StoredObject, before: dict | None, now: float) -> None:
        if before is None:
            address = f"10.96.0.{next(self.addresses)}"
            obj.body["spec"].setdefault("clusterIP", address)
            obj.body["spec"].setdefault("clusterIPs", [address])

    def status(self, obj: StoredObject, now: float) -> dict:
        return {"loadBalancer": {}}


# --- HorizontalPodAutoscalers -----------------------------------------------------------------------------------


class HorizontalPodAutoscalerController(AppliedController):
    resource = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
                        singular="horizontalpodautoscaler", verbs=CORE_VERBS, short_names=("hpa",), categories=("all",),
                        subresources=(Subresource("status", "HorizontalPodAutoscaler"),))  # fmt: skip

    def __init__(self, workloads: Workloads, deployments: DeploymentController, sync_seconds: float = 0.05):
        super().__init__()
        self.workloads, self.deployments, self.sync_seconds = workloads, deployments, sync_seconds
        deployments.autoscalers = self
        self.load: dict[tuple[str, str], int] = {}  # (namespace, hpa name) -> the replica count its metrics ask for

    def validate(self, body: dict, live: dict | None) -> list[str]:
        spec = body.get("spec", {})
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        found = [] if low >= 1 else [f"spec.minReplicas: Invalid value: {low}: must be greater than or equal to 1"]
        if high < low:
            found.append(f"spec.maxReplicas: Invalid value: {high}: must be greater than or equal to `minReplicas`")
        return found

    def sync(self, now: float) -> None:
        """Scale each autoscaler's Deployment within its bounds, once it has synced (``horizontal.go``: below
        minReplicas is raised to it even without metrics)."""
        with self.workloads.lock:
            for (namespace, name), hpa in list(self.objects.items()):
                if not hpa.exists(now, self.server.deletion_seconds) or hpa.deleted:
                    continue
                if now < hpa.created_at + self.sync_seconds:
                    continue
                spec = hpa.body["spec"]
                target = self.deployments.existing(namespace, spec["scaleTargetRef"]["name"], now)
                if target is None or target.deleted:
                    continue
                current = target.body["spec"].get("replicas", 1)
                wanted = self.load.get((namespace, name), current)
                desired = min(max(wanted, spec.get("minReplicas", 1)), spec["maxReplicas"])
                if desired != current:
                    self.deployments.scale(target, desired, now)
                    hpa.state["last_scale"] = now

    def status(self, obj: StoredObject, now: float) -> dict:
        self.sync(now)
        target = self.deployments.existing(obj.namespace, obj.body["spec"]["scaleTargetRef"]["name"], now)
        current = target.body["spec"].get("replicas", 0) if target else 0
        status = {"currentReplicas": current, "desiredReplicas": current}
        if "last_scale" in obj.state:
            status["lastScaleTime"] = rfc3339(_wall(obj.state["last_scale"]))
        return status


def apps_controllers(workloads: Workloads) -> list[Controller]:
    """The Deployment, Service and HorizontalPodAutoscaler controllers, wired together."""
    deployments = DeploymentController(workloads)
    return [deployments, ServiceController(workloads), HorizontalPodAutoscalerController(workloads, deployments)]
