"""A Kubernetes API server on 127.0.0.1 that behaves as the real one does where this library's steps depend on it.

The server is generic; what runs behind each resource it serves is a ``Controller`` given when it is made
(``FakeKube([TrainingOperator()])``, see ``tests/support/fake_pytorchjob.py``). It serves, as the official
Python client calls them:

- every controller's resource, namespaced, under ``/apis/<group>/<version>/...`` (``/api/v1/...`` for the core
  group): create (the controller's admission rules first: 422), get, list (label selectors), delete, and patch
  (handed to the controller; an apply body's name and namespace must match the URL's: 400). A name stays taken
  (409 AlreadyExists) while its object is being deleted. DELETE
  honours ``propagationPolicy`` as the API server reads DeleteOptions (from the body when there is one, else from
  the query): ``Foreground`` keeps the object, with ``metadata.deletionTimestamp`` and the ``foregroundDeletion``
  finalizer, until its pods have terminated (``deletion_seconds``), then 404; ``Background`` (the default)
  removes it at once and its pods after ``deletion_seconds``; ``Orphan`` leaves the pods running.
- pods: those every controller's objects have, listed by label selector (equality, inequality, set-based and
  existence requirements; 400 for one that does not parse).
- a pod's log: ``container`` (400 when the pod has several containers and none is named, as the real API says
  it), ``tailLines``, ``previous`` (400 when the container has no terminated run), ``timestamps`` (RFC 3339 with
  nanoseconds, trailing zeros trimmed, as the kubelet writes them) and
  ``follow`` (a chunked stream that ends when the container ends, or earlier when ``log_stream_seconds`` is
  set: a log rotation or a proxy's timeout ends real streams while the job runs on).
- events (core v1): those recorded with ``record_event`` and those controllers derive, listed with field
  selectors on the fields the API server indexes (400 for any other field).
- ``/version`` and discovery, which any authenticated user may read: ``/api``, ``/api/v1``, ``/apis``,
  ``/apis/<group>`` and ``/apis/<group>/<version>`` answer APIVersions, APIResourceList, APIGroupList and
  APIGroup listing exactly the resources served: pods, pods/log and events, and each controller's resource
  with its subresources. (The aggregated discovery format, which kubectl asks for first, is not served: the
  legacy one answers, as it does for clients that accept only JSON.)

Faults are injected per request (``inject``): an HTTP status (5xx, 429 with Retry-After, 403 with the real
message), a connection reset with no reply, a delay, or a reply lost after the request was carried out.

Every request is recorded (``requests``), answered or not, with what the API server's RBAC authorizer would check
for it (``Request.access``: verb, API group, resource and subresource), so a test can tell which permissions a
client used.

A controller (subclass ``Controller``) declares its ``resource`` and implements what it needs of ``admit``,
``on_create``, ``on_delete``, ``status``, ``pods``, ``log``, ``finished_at``, ``events`` and ``patch``; the
server keeps its objects in ``controller.objects`` and ``controller.created``, and gives it ``server``
(``pod``, ``event``, ``record_event``, ``create``, ``sidecars``, ``deletion_seconds``).
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
RESET = 0  # a Fault status: the connection is reset instead of answered
SERVICE_ACCOUNT = "system:serviceaccount:kubeflow:pipeline-runner"
VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}
# Any resource path: /api/v1/... (the core group) or /apis/<group>/<version>/..., namespaced or not.
RESOURCE_PATH = re.compile(
    r"^/(?:api/(?P<core_version>[^/]+)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<subresource>[^/]+))?)?$"
)
DISCOVERY_PATH = re.compile(
    r"^/(?:api(?:/(?P<core_version>[^/]+))?|apis(?:/(?P<group>[^/]+)(?:/(?P<version>[^/]+))?)?)/?$"
)  # the official client asks for /api/ and /apis/<group>/<version>/
REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# The verbs discovery lists for a custom resource and its status and scale subresources (apiextensions-apiserver's
# customresource_discovery_controller), and for the core resources the fake serves.
CRD_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
CORE_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# core/v1 Event fields a field selector may name (k8s.io/kubernetes pkg/apis/core/v1 conversion.go, strategy.go).
EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
)


# --- what the server serves ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subresource:
    """A subresource as discovery lists it (``pods/log``, ``pytorchjobs/status``)."""

    name: str
    kind: str
    verbs: tuple[str, ...] = SUBRESOURCE_VERBS
    group: str = ""  # set when the subresource answers another group's kind (scale: autoscaling/v1 Scale)
    version: str = ""


@dataclass(frozen=True)
class Resource:
    """A namespaced resource the fake serves, with what discovery says of it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    singular: str = ""
    verbs: tuple[str, ...] = CRD_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()

    @classmethod
    def from_crd(cls, path: str | Path, version: str) -> Resource:
        """The resource a CustomResourceDefinition file defines, as the API server serves ``version`` of it."""
        crd = yaml.safe_load(Path(path).read_text())
        names = crd["spec"]["names"]
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served", True)]
        assert crd["spec"]["scope"] == "Namespaced", "the fake serves namespaced resources only"
        subresources = []
        if "status" in (served.get("subresources") or {}):
            subresources.append(Subresource("status", names["kind"]))
        if "scale" in (served.get("subresources") or {}):
            subresources.append(Subresource("scale", "Scale", group="autoscaling", version="v1"))
        return cls(
            group=crd["spec"]["group"],
            version=version,
            plural=names["plural"],
            kind=names["kind"],
            singular=names.get("singular", names["kind"].lower()),
            short_names=tuple(names.get("shortNames", ())),
            categories=tuple(names.get("categories", ())),
            subresources=tuple(subresources),
        )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` (just ``plural`` in the core group), as the API server's messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[dict]:
        """The resource's APIResource entries, subresources after it."""
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular or self.kind.lower(),
                "namespaced": True,
                "kind": self.kind,
                "verbs": list(self.verbs),
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
                **({"categories": list(self.categories)} if self.categories else {}),
            }
        ]
        for sub in self.subresources:
            entry = {"name": f"{self.plural}/{sub.name}", "singularName": "", "namespaced": True, "kind": sub.kind}
            if sub.group:
                entry |= {"group": sub.group, "version": sub.version}
            entries.append(entry | {"verbs": list(sub.verbs)})
        return entries


PODS = Resource(
    "",
    "v1",
    "pods",
    "Pod",
    singular="pod",
    verbs=CORE_VERBS,
    short_names=("po",),
    categories=("all",),
    subresources=(Subresource("log", "Pod", verbs=("get",)),),
)
EVENTS = Resource("", "v1", "events", "Event", singular="event", verbs=CORE_VERBS, short_names=("ev",))


@dataclass
class StoredObject:
    """An object as the server keeps it: the body created, when, and its deletion."""

    resource: Resource
    body: dict
    created_at: float  # time.monotonic() at creation
    created_wall: float  # time.time() at creation, for timestamps
    deletion_requested_at: float | None = None
    propagation: str = ""
    state: dict = field(default_factory=dict)  # what the controller keeps about the object (its script, ...)

    @property
    def deleted(self) -> bool:
        """A DELETE was accepted: the object is being deleted, or is gone."""
        return self.deletion_requested_at is not None

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]

    @property
    def uid(self) -> str:
        return self.body["metadata"]["uid"]

    def exists(self, now: float, deletion_seconds: float) -> bool:
        if self.deletion_requested_at is None:
            return True
        return self.propagation == "Foreground" and now < self.deletion_requested_at + deletion_seconds

    def pods_exist(self, now: float, deletion_seconds: float) -> bool:
        if self.deletion_requested_at is None or self.propagation == "Orphan":
            return True
        return now < self.deletion_requested_at + deletion_seconds

    def stamp(self, after: float, nanos: bool = False) -> str:
        """The time ``after`` seconds after the object's creation, as the API server (or, ``nanos``, the kubelet)
        writes it."""
        return rfc3339(self.created_wall + after, nanos)

    def as_object(self, status: dict | None) -> dict:
        metadata = dict(self.body["metadata"])
        if self.deleted:
            metadata["deletionTimestamp"] = self.stamp(self.deletion_requested_at - self.created_at)
            metadata["deletionGracePeriodSeconds"] = 0
            metadata["finalizers"] = ["foregroundDeletion"]
        return {**self.body, "metadata": metadata} | ({"status": status} if status is not None else {})

    def reference(self, field_path: str = "") -> dict:
        """The object as an Event's ``involvedObject`` names it."""
        return {
            "kind": self.resource.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "apiVersion": self.resource.api_version,
            **({"fieldPath": field_path} if field_path else {}),
        }


class Controller:
    """What runs behind one resource: its admission rules, its status over time, its pods, their logs, its events.

    Register an instance with ``FakeKube([controller, ...])``. The server routes every request for
    ``resource`` here, keeps the objects (``objects``: (namespace, name) -> the latest ``StoredObject`` of that
    name; ``created``: every one ever created) and sets ``server`` before it starts. What a controller shows is
    computed when it is read, from the stored object and the time since its creation (``now`` is
    ``time.monotonic()``), so scenarios are scripted in time rather than driven by a loop.
    """

    resource: Resource
    patch_types: tuple[str, ...] = ()  # the PATCH media types ``patch`` handles

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.created: list[StoredObject] = []
        self.server: FakeKube | None = None

    def admit(self, body: dict) -> list[str]:
        """Why the controller's admission webhooks refuse ``body`` (422); empty when they admit it."""
        return []

    def on_create(self, obj: StoredObject) -> None:
        """The object was created (e.g. remember the scenario it follows)."""

    def on_delete(self, obj: StoredObject, now: float) -> None:
        """A DELETE of the object was accepted (``obj.propagation`` says how): e.g. delete what it owns."""

    def status(self, obj: StoredObject, now: float) -> dict | None:
        """The object's ``status`` at ``now``; None for none."""
        return None

    def pods(self, obj: StoredObject, now: float) -> list[dict]:
        """The pods the controller made for ``obj`` that exist at ``now`` (see ``FakeKube.pod``)."""
        return []

    def log(self, obj: StoredObject, pod_name: str, container: str) -> list[tuple[float, str]]:
        """What ``container`` of pod ``pod_name`` writes: (seconds after the object's creation, text)."""
        return []

    def finished_at(self, obj: StoredObject) -> float | None:
        """Seconds after creation at which the object's containers end by themselves; None: not by themselves."""
        return None

    def events(self, obj: StoredObject, now: float) -> list[dict]:
        """Events the controller has recorded about ``obj`` (or its pods) by ``now`` (see ``FakeKube.event``)."""
        return []

    def patch(self, obj: StoredObject | None, body: Any, media_type: str, query: dict, now: float) -> tuple[int, Any]:
        """(HTTP status, reply) for a PATCH of ``obj`` (None when there is none of that name) with ``body``, parsed
        from ``media_type`` (one of ``patch_types``; others get 415 before this), under the server's lock. Controllers
        that serve PATCH (a server-side apply creates what is missing) list ``patch_types`` and override this."""
        raise NotImplementedError(f"{type(self).__name__} lists patch_types {self.patch_types} but has no patch()")

    def existing(self, namespace: str, name: str, now: float) -> StoredObject | None:
        obj = self.objects.get((namespace, name))
        return obj if obj is not None and obj.exists(now, self.server.deletion_seconds) else None

    def view(self, obj: StoredObject, now: float) -> dict:
        """The object as a GET answers it."""
        return obj.as_object(self.status(obj, now))


def unsupported_patch_message(accepted: tuple[str, ...]) -> str:
    listed = ", ".join(accepted) if accepted else "none"
    return f"the body of the request was in an unknown format - accepted media types include: {listed}"


@dataclass
class Fault:
    """What the server does instead of (or before) answering the next ``times`` matching requests."""

    method: str
    path: str  # a suffix of the request's path, e.g. "/pytorchjobs/train-abc123"
    status: int | None = None  # an HTTP status to answer with, RESET for no answer, None to answer normally
    times: int = 1
    retry_after: int | None = None  # seconds, sent as Retry-After
    delay: float = 0.0  # seconds the server waits before handling the request
    carried_out: bool = False  # handle the request first, then fail: a reply lost after the create succeeded


@dataclass(frozen=True)
class Access:
    """What the API server's RBAC authorizer checks for a request (k8s.io/apiserver's RequestInfo)."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str  # "" for the core group
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def rule(self) -> tuple[str, str, str]:
        """(API group, resource, verb) as a Role's rule names them: a subresource as ``pods/log``."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return self.group, resource, self.verb


def access(method: str, path: str, query: str = "") -> Access | None:
    """The authorizer's view of a request, resolved as the API server's RequestInfoFactory resolves it; None for a
    path that names no resource (discovery, /version).

    GET is get on a named object, and on a collection list, or watch with ``?watch=true``; DELETE on a collection
    is deletecollection. A subresource is checked on its own (``pods/log``), whatever the object's permissions.
    """
    match = RESOURCE_PATH.match(path)
    if not match:
        return None
    verb = VERBS.get(method, method.lower())
    if not match["name"]:
        if verb == "get":
            try:
                watch = _query_bool(parse_qs(query), "watch")
            except ValueError:  # the API server's resolver, too, takes a query it cannot parse for a list
                watch = False
            verb = "watch" if watch else "list"
        elif verb == "delete":
            verb = "deletecollection"
    return Access(
        verb,
        match["group"] or "",
        match["resource"],
        match["subresource"] or "",
        match["ns"] or "",
        match["name"] or "",
    )


@dataclass(frozen=True)
class Request:
    """A request as it arrived: method, path and raw query string."""

    method: str
    path: str
    query: str = ""

    @property
    def access(self) -> Access | None:
        return access(self.method, self.path, self.query)


# --- pods and their states ----------------------------------------------------------------------------------------


def rfc3339(epoch_seconds: float, nanos: bool = False) -> str:
    """metav1.Time (whole seconds), or the kubelet's log timestamps (RFC 3339 nanoseconds, trailing zeros trimmed)."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        fraction = f"{int(round((epoch_seconds % 1) * 1e9)) % 1_000_000_000:09d}".rstrip("0")
        text += f".{fraction}" if fraction else ""
    return text + "Z"


def unschedulable(message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.") -> dict:
    """A pod's status when the scheduler finds no node for it."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
    }


def image_pull_backoff(image: str, container: str = "pytorch") -> dict:
    """A pod's status when its node cannot pull the image."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            container_status(
                container,
                image,
                {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                },
            )
        ],
    }


def container_status(name: str, image: str, state: dict, ready: bool = False) -> dict:
    return {"name": name, "image": image, "imageID": "", "ready": ready, "restartCount": 0, "state": state}


# --- the server ---------------------------------------------------------------------------------------------------


@dataclass
class FakeKube:
    controllers: list[Controller] = field(default_factory=list)
    deletion_seconds: float = 0.1  # how long a deleted object's pods take to terminate
    log_stream_seconds: float = 0.0  # > 0: every follow stream is ended after this long, the container running or not
    sidecars: list[str] = field(default_factory=list)  # containers a mutating webhook adds to every pod
    requests: list[Request] = field(default_factory=list)  # every request, in arrival order
    faults: list = field(default_factory=list)
    recorded_events: list[dict] = field(default_factory=list)  # events recorded with record_event
    kubernetes_version: str = "v1.31.4"  # what /version says

    def __post_init__(self) -> None:
        self._by_path: dict[tuple[str, str, str], Controller] = {}
        for controller in self.controllers:
            resource = controller.resource
            key = (resource.group, resource.version, resource.plural)
            if key in self._by_path or key in {_key(PODS), _key(EVENTS)}:
                raise ValueError(f"two controllers serve {resource.qualified} {resource.version}")
            self._by_path[key] = controller
            controller.server = self
        self._uids = itertools.count(1)
        self.lock = threading.Lock()

    def inject(self, *faults: Fault) -> FakeKube:
        with self.lock:
            self.faults.extend(faults)
        return self

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and path.endswith(fault.path) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def start(self) -> FakeKube:
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def api_client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig for this server, for a process that loads its configuration as a step does."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config))
        return path

    def count(self, method: str, suffix: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and r.path.endswith(suffix))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake Kubernetes API: condition not met within {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    # --- what controllers use ----------------------------------------------------------------------------------

    def pod(
        self, owner: StoredObject, name: str, labels: dict[str, str], containers: list[str], image: str, status: dict
    ) -> dict:
        """A pod ``owner`` has, as a list answers it: terminating once the owner is being deleted (but Orphan)."""
        metadata = {"name": name, "namespace": owner.namespace, "labels": labels, "uid": f"{owner.uid}-{name}"}
        if owner.deleted and owner.propagation != "Orphan":
            metadata["deletionTimestamp"] = rfc3339(time.time())
        return {
            "metadata": metadata,
            "spec": {"containers": [{"name": c, "image": image} for c in containers]},
            "status": status,
        }

    def event(
        self,
        involved: dict,
        reason: str,
        message: str,
        stamp: str,
        type: str = "Normal",
        component: str = "",
    ) -> dict:
        """A core/v1 Event about ``involved`` (an ``involvedObject`` reference), as controllers' recorders write it."""
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved['name']}.{abs(hash((involved.get('uid'), reason, message, stamp))):x}",
                "namespace": involved["namespace"],
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": component} if component else {},
            "reportingComponent": component,
        }

    def record_event(self, involved: dict, reason: str, message: str, type: str = "Normal", component: str = ""):
        """Record an Event now, as a controller does when something happens."""
        with self.lock:
            self.recorded_events.append(self.event(involved, reason, message, rfc3339(time.time()), type, component))

    def create(self, controller: Controller, body: dict) -> tuple[int, dict]:
        """Store ``body`` (admitted, its namespace set) as a new object of ``controller``'s resource: (201, the
        object), or (409, Status) while an object of its name exists. Call with ``lock`` held; a PATCH that
        applies an object which does not exist yet creates it through this."""
        now = time.monotonic()
        name, namespace = body["metadata"].get("name", ""), body["metadata"]["namespace"]
        if controller.existing(namespace, name, now):
            return 409, status_body(409, f'{controller.resource.qualified} "{name}" already exists')
        body["metadata"]["uid"] = f"uid-{next(self._uids)}"
        body["metadata"]["creationTimestamp"] = rfc3339(time.time())
        obj = StoredObject(controller.resource, body, now, time.time())
        controller.on_create(obj)
        controller.objects[(namespace, name)] = obj
        controller.created.append(obj)
        return 201, controller.view(obj, now)

    def controller_for(self, resource: Resource) -> Controller | None:
        return self._by_path.get(_key(resource))

    # --- what the server knows ---------------------------------------------------------------------------------

    def pods(self, namespace: str, now: float) -> list[tuple[Controller, StoredObject, dict]]:
        found = []
        for controller in self.controllers:
            for (object_namespace, _), obj in list(controller.objects.items()):
                if object_namespace == namespace and obj.pods_exist(now, self.deletion_seconds):
                    found += [(controller, obj, pod) for pod in controller.pods(obj, now)]
        return found

    def events(self, namespace: str, now: float) -> list[dict]:
        found = [event for event in self.recorded_events if event["metadata"]["namespace"] == namespace]
        for controller in self.controllers:
            for obj in list(controller.created):
                if obj.namespace == namespace:
                    found += controller.events(obj, now)
        return sorted(found, key=lambda event: event["lastTimestamp"])

    def container_end(self, controller: Controller, obj: StoredObject) -> float | None:
        """Seconds after creation at which the object's containers end (they finished, or it was deleted); None: not
        yet."""
        ends = controller.finished_at(obj)
        if obj.deleted and obj.propagation != "Orphan":
            deleted_after = obj.deletion_requested_at - obj.created_at
            ends = deleted_after if ends is None else min(ends, deleted_after)
        return ends

    def version_info(self) -> dict:
        """``/version``, as the API server answers it (k8s.io/apimachinery version.Info)."""
        major, minor, _ = self.kubernetes_version.lstrip("v").split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.kubernetes_version,
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def discovery(self, path: str) -> dict | None:
        """What a discovery path (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``, ``/apis/<group>/<version>``)
        answers; None for a path that is not one, or names a group or version the server does not serve."""
        match = DISCOVERY_PATH.match(path)
        if not match:
            return None
        core_version, group, version = match["core_version"], match["group"], match["version"]
        served = [PODS, EVENTS, *(controller.resource for controller in self.controllers)]
        groups: dict[str, list[str]] = {}
        for resource in served:
            if resource.group and resource.version not in groups.setdefault(resource.group, []):
                groups[resource.group].append(resource.version)

        def api_group(name: str) -> dict:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        def resources(group_name: str, version_name: str) -> list[dict]:
            return [
                entry
                for resource in served
                if (resource.group, resource.version) == (group_name, version_name)
                for entry in resource.discovery()
            ]

        if core_version is not None:
            if core_version != "v1":
                return None
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources("", "v1")}
        if path.rstrip("/") == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": urlsplit(self.url).netloc}],
            }
        if group is None:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(name) for name in groups]}
        if group not in groups:
            return None
        if version is None:
            return {"kind": "APIGroup", "apiVersion": "v1", **api_group(group)}
        if version not in groups[group]:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}",
            "resources": resources(group, version),
        }


def _key(resource: Resource) -> tuple[str, str, str]:
    return resource.group, resource.version, resource.plural


def _query_bool(query: dict[str, list[str]], name: str) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool: the Python client sends
    "True")."""
    value = query.get(name, ["false"])[0]
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False", ""):
        return False
    raise ValueError(f'{name}: Invalid value: "{value}": strconv.ParseBool: parsing "{value}": invalid syntax')


def status_body(code: int, message: str, reason: str = "") -> dict:
    """A failure as the API server answers it: a ``Status`` object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
        "code": code,
    }


def _selector_requirements(selector: str) -> list[str]:
    """Split a label selector at the commas that are not inside a set-based requirement's parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if selector.strip() else []


LABEL_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
REQUIREMENT = re.compile(
    rf"^\s*(?:!\s*(?P<absent>{LABEL_KEY})"
    rf"|(?P<key>{LABEL_KEY})\s*(?:(?P<op>==|=|!=)\s*(?P<value>{LABEL_VALUE})"
    rf"|\s+(?P<set>in|notin)\s*\((?P<values>\s*{LABEL_VALUE}\s*(?:,\s*{LABEL_VALUE}\s*)*)\))?)\s*$"
)
FIELD_REQUIREMENT = re.compile(r"^(?P<key>[^=!,]+?)(?P<op>==|=|!=)(?P<value>[^,]*)$")


def selector_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate on labels for a label selector; ValueError for one the API server would not parse."""
    tests = []
    for requirement in _selector_requirements(selector):
        match = REQUIREMENT.match(requirement)
        if not match:
            raise ValueError(f"unable to parse requirement: {requirement.strip()!r}")
        if match["absent"]:
            tests.append(lambda labels, key=match["absent"]: key not in labels)
        elif match["op"]:
            equal = match["op"] != "!="
            tests.append(
                lambda labels, key=match["key"], value=match["value"], eq=equal: (labels.get(key) == value) == eq
            )
        elif match["set"]:
            values = {v.strip() for v in match["values"].split(",")}
            if match["set"] == "in":
                tests.append(lambda labels, key=match["key"], vs=values: labels.get(key) in vs)
            else:
                tests.append(lambda labels, key=match["key"], vs=values: labels.get(key) not in vs)
        else:
            tests.append(lambda labels, key=match["key"]: key in labels)
    return lambda labels: all(test(labels) for test in tests)


def event_fields(event: dict) -> dict[str, str]:
    """The fields of a core/v1 Event a field selector can name, as the API server indexes them."""
    involved = event.get("involvedObject", {})
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent", "")
    fields = {f"involvedObject.{name}": str(involved.get(name, "")) for name in (
        "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath",
    )}  # fmt: skip
    return fields | {
        "reason": event.get("reason", ""),
        "reportingComponent": event.get("reportingComponent", ""),
        "source": source,
        "type": event.get("type", ""),
        "metadata.namespace": event["metadata"]["namespace"],
        "metadata.name": event["metadata"]["name"],
    }


def field_matcher(selector: str, supported: tuple[str, ...]) -> Callable[[dict[str, str]], bool]:
    """A predicate on an object's selectable fields for a field selector (``a=b,c!=d``); ValueError naming a field
    that is not ``supported``, or a requirement that does not parse."""
    tests = []
    for requirement in [part for part in selector.split(",") if part.strip()] if selector.strip() else []:
        match = FIELD_REQUIREMENT.match(requirement.strip())
        if not match:
            raise ValueError(f"invalid selector: '{selector}'; can't understand '{requirement}'")
        if match["key"] not in supported:
            raise ValueError(f"field label not supported: {match['key']}")
        equal = match["op"] != "!="
        tests.append(lambda fields, key=match["key"], value=match["value"], eq=equal: (fields.get(key) == value) == eq)
    return lambda fields: all(test(fields) for test in tests)


def _handler(server: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as the real API server

        def log_message(self, *args):
            pass

        # --- plumbing ------------------------------------------------------------------------------------------

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _reset(self) -> None:
            """Drop the connection with a TCP reset and no reply."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the reader holds the socket open; the writer does not
            self.connection.close()
            self.close_connection = True

        def _body(self, raw: bytes) -> Any:
            """The request body: JSON, or YAML for a server-side apply (``application/apply-patch+yaml``)."""
            if not raw.strip():
                return {}
            media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            return yaml.safe_load(raw) if media_type.endswith("+yaml") else json.loads(raw)

        def _serve(self, method: str, route: Callable[[Any, Any], Any]) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(method, url.path, url.query)
            server.requests.append(request)
            fault = server._take_fault(method, url.path)
            if fault and fault.delay:
                time.sleep(fault.delay)
            if fault and fault.status is not None and not fault.carried_out:
                return self._fail(fault, request)
            try:
                body = self._body(raw)
            except (ValueError, yaml.YAMLError) as error:
                return self._send(400, status_body(400, f"the request body could not be decoded: {error}"))
            reply = route(url, body)
            if fault and fault.status is not None:  # carried out, then the reply is lost
                return self._fail(fault, request)
            if reply is not None:
                self._send(*reply)
            return None

        def _fail(self, fault: Fault, request: Request) -> None:
            if fault.status == RESET:
                return self._reset()
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            message = {
                403: _forbidden_message(request),
                429: "Too many requests, please try again later.",
                503: "The server is currently unable to handle the request",
            }.get(fault.status, f"injected HTTP {fault.status}")
            return self._send(fault.status, status_body(fault.status, message), headers)

        # --- verbs ---------------------------------------------------------------------------------------------

        def do_POST(self):
            self._serve("POST", self._create)

        def do_GET(self):
            self._serve("GET", self._get)

        def do_DELETE(self):
            self._serve("DELETE", self._delete)

        def do_PATCH(self):
            self._serve("PATCH", self._patch)

        # --- routes --------------------------------------------------------------------------------------------

        def _route(self, url) -> tuple[re.Match | None, Controller | None]:
            match = RESOURCE_PATH.match(url.path)
            if not match or not match["ns"]:
                return match, None
            key = (match["group"] or "", match["version"] or match["core_version"], match["resource"])
            return match, server._by_path.get(key)

        def _create(self, url, body):
            match, controller = self._route(url)
            if controller is None or match["name"]:
                return _not_found()
            if body.get("metadata", {}).setdefault("namespace", match["ns"]) != match["ns"]:
                message = "the namespace of the provided object does not match the namespace sent on the request"
                return 400, status_body(400, message)
            violations = controller.admit(body)
            if violations:
                message = "admission webhook denied the request: " + "; ".join(violations)
                return 422, status_body(422, message)
            with server.lock:
                return server.create(controller, body)

        def _get(self, url, _body):
            now = time.monotonic()
            query = parse_qs(url.query)
            if url.path == "/version":
                return 200, server.version_info()
            if DISCOVERY_PATH.match(url.path):
                answer = server.discovery(url.path)
                return (200, answer) if answer is not None else _not_found()
            match, controller = self._route(url)
            if match and match["ns"] and match["resource"] == "pods" and not match["group"]:
                if match["name"] and match["subresource"] == "log":
                    return self._log(match["ns"], match["name"], query, now)
                if not match["name"]:
                    return self._list_pods(match["ns"], query, now)
            if match and match["ns"] and match["resource"] == "events" and not match["group"] and not match["name"]:
                return self._list_events(match["ns"], query, now)
            if controller is None or match["subresource"]:
                return _not_found()
            resource = controller.resource
            if not match["name"]:
                try:
                    selected = selector_matcher(query.get("labelSelector", [""])[0])
                except ValueError as error:
                    return 400, status_body(400, str(error))
                items = [
                    controller.view(obj, now)
                    for (ns, name), obj in list(controller.objects.items())
                    if ns == match["ns"] and controller.existing(ns, name, now)
                    if selected(obj.body["metadata"].get("labels") or {})
                ]
                metadata = {"resourceVersion": str(len(controller.created))}
                return 200, {"apiVersion": resource.api_version, "kind": f"{resource.kind}List", "metadata": metadata,
                             "items": items}  # fmt: skip
            obj = controller.existing(match["ns"], match["name"], now)
            if obj is None:
                return 404, status_body(404, f'{resource.qualified} "{match["name"]}" not found')
            return 200, controller.view(obj, now)

        def _list_pods(self, namespace, query, now):
            try:
                selected = selector_matcher(query.get("labelSelector", [""])[0])
            except ValueError as error:
                return 400, status_body(400, str(error))
            items = [pod for _, _, pod in server.pods(namespace, now) if selected(pod["metadata"]["labels"])]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

        def _list_events(self, namespace, query, now):
            try:
                selected = field_matcher(query.get("fieldSelector", [""])[0], EVENT_FIELDS)
            except ValueError as error:
                return 400, status_body(400, str(error))
            items = [event for event in server.events(namespace, now) if selected(event_fields(event))]
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

        def _delete(self, url, body):
            match, controller = self._route(url)
            if controller is None or not match["name"] or match["subresource"]:
                return _not_found()
            # The API server reads DeleteOptions from the body when there is one, else from the query.
            query = parse_qs(url.query)
            policy = body.get("propagationPolicy") if body else query.get("propagationPolicy", [None])[0]
            if policy is not None and policy not in PROPAGATION_POLICIES:
                message = f'propagationPolicy: Unsupported value: "{policy}": supported values: ' + ", ".join(
                    f'"{p}"' for p in PROPAGATION_POLICIES
                )
                return 422, status_body(422, message)
            now = time.monotonic()
            with server.lock:
                obj = controller.existing(match["ns"], match["name"], now)
                if obj is None:
                    return 404, status_body(404, f'{controller.resource.qualified} "{match["name"]}" not found')
                if not obj.deleted:
                    obj.deletion_requested_at = now
                    obj.propagation = policy or "Background"  # the default for custom resources
                    controller.on_delete(obj, now)
                if obj.exists(now, server.deletion_seconds):  # still there: answered with the object, 202
                    return 202, controller.view(obj, now)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

        def _patch(self, url, body):
            match, controller = self._route(url)
            if controller is None or not match["name"] or match["subresource"]:
                return _not_found()
            media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if media_type not in controller.patch_types:
                return 415, status_body(415, unsupported_patch_message(controller.patch_types))
            if isinstance(body, dict) and isinstance(body.get("metadata"), dict):  # an apply names its object
                metadata = body["metadata"]
                if metadata.setdefault("namespace", match["ns"]) != match["ns"]:
                    message = "the namespace of the provided object does not match the namespace sent on the request"
                    return 400, status_body(400, message)
                if metadata.get("name", match["name"]) != match["name"]:
                    message = (
                        f"the name of the object ({metadata['name']}) does not match the name on the URL "
                        f"({match['name']})"
                    )
                    return 400, status_body(400, message)
            now = time.monotonic()
            with server.lock:
                obj = controller.existing(match["ns"], match["name"], now)
                return controller.patch(obj, body, media_type, parse_qs(url.query), now)

        def _log(self, namespace, pod_name, query, now):
            found = [entry for entry in server.pods(namespace, now) if entry[2]["metadata"]["name"] == pod_name]
            if not found:
                return 404, status_body(404, f'pods "{pod_name}" not found')
            controller, obj, pod = found[-1]
            names = [c["name"] for c in pod["spec"]["containers"]]
            container = query.get("container", [""])[0]
            if not container:
                if len(names) > 1:
                    message = (
                        f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(names)}]"
                    )
                    return 400, status_body(400, message)
                container = names[0]
            if container not in names:
                return 400, status_body(400, f"container {container} is not valid for pod {pod_name}")
            if pod["status"]["phase"] == "Pending":
                waiting = "ContainerCreating"
                for status in pod["status"].get("containerStatuses", []):
                    if status["name"] == container:
                        waiting = status["state"].get("waiting", {}).get("reason", waiting)
                message = f'container "{container}" in pod "{pod_name}" is waiting to start: {waiting}'
                return 400, status_body(400, message)
            try:
                flags = ("timestamps", "follow", "previous")
                timestamps, follow, previous = (_query_bool(query, name) for name in flags)
                tail = int(query["tailLines"][0]) if "tailLines" in query else None
            except ValueError as error:
                return 400, status_body(400, str(error))
            if previous:  # the kubelet keeps the log of a container's last terminated run
                statuses = {s["name"]: s for s in pod["status"].get("containerStatuses", [])}
                if not (statuses.get(container, {}).get("lastState") or {}).get("terminated"):
                    message = f'previous terminated container "{container}" in pod "{pod_name}" not found'
                    return 400, status_body(400, message)

            def lines() -> list[tuple[float, str]]:
                """What the container wrote, up to its end."""
                ends = server.container_end(controller, obj)
                written = controller.log(obj, pod_name, container)
                return [(after, text) for after, text in written if ends is None or after <= ends]

            def render(after: float, text: str) -> bytes:
                return (f"{obj.stamp(after, nanos=True)} {text}\n" if timestamps else f"{text}\n").encode()

            if not follow:
                written = [(a, t) for a, t in lines() if now - obj.created_at >= a]
                written = written[-tail:] if tail else [] if tail == 0 else written
                body = b"".join(render(a, t) for a, t in written)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            self._stream(controller, obj, lines, render)
            return None

        def _stream(self, controller, obj, lines, render) -> None:
            """Write each line when it is due; end when the container ends, or when log_stream_seconds ran out."""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            opened, written = time.monotonic(), 0
            try:
                while not server.stopping.is_set():
                    now = time.monotonic()
                    ends = server.container_end(controller, obj)
                    due = [line for line in lines() if now - obj.created_at >= line[0]]
                    for after, text in due[written:]:
                        chunk = render(after, text)
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    written = len(due)
                    if ends is not None and now - obj.created_at >= ends:
                        break
                    if server.log_stream_seconds and now - opened >= server.log_stream_seconds:
                        break
                    time.sleep(0.01)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client went away
                self.close_connection = True

    return Handler


def _not_found() -> tuple[int, dict]:
    return 404, status_body(404, "the server could not find the requested resource")


def _forbidden_message(request: Request) -> str:
    """What the API server says when RBAC denies the call."""
    denied = request.access
    if denied is None:
        return f"{request.method} {request.path} is forbidden"
    qualified = f"{denied.resource}.{denied.group}" if denied.group else denied.resource
    subject = f'{qualified} "{denied.name}"' if denied.name else qualified
    _, resource, verb = denied.rule
    scope = f'in the namespace "{denied.namespace}"' if denied.namespace else "at the cluster scope"
    return (
        f'{subject} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource "{resource}" '
        f'in API group "{denied.group}" {scope}'
    )
