"""A Kubernetes API server on 127.0.0.1 that behaves as the real one does where the job launcher depends on it.

It answers what the official Python client calls:

- a custom resource (create, get, list, delete). A name stays taken (409 AlreadyExists) while its object is
  being deleted. DELETE honours ``propagationPolicy`` as the API server reads DeleteOptions (from the body when
  there is one, else from the query): ``Foreground`` keeps the job, with ``metadata.deletionTimestamp`` and the
  ``foregroundDeletion`` finalizer, until its pods have terminated (``deletion_seconds``), then 404;
  ``Background`` (the default for custom resources) removes it at once and its pods after ``deletion_seconds``;
  ``Orphan`` leaves the pods running. The operator's admission webhook rules apply to a create (422).
- pods: the operator's pods for every replica, with its labels, listed by label selector (equality, inequality,
  set-based and existence requirements; 400 for one that does not parse). Until the job runs they are Pending,
  with the status ``pending_pods`` gives their replica type (Unschedulable, ImagePullBackOff, ...).
- a pod's log: ``container`` (400 when the pod has several containers and none is named, as the real API says
  it), ``timestamps`` (RFC 3339 with nanoseconds, trailing zeros trimmed, as the kubelet writes them) and
  ``follow`` (a chunked stream that ends when the container ends, or earlier when ``log_stream_seconds`` is
  set: a log rotation or a proxy's timeout ends real streams while the job runs on).

Each job goes through a scripted list of conditions over time, set as the Training Operator sets them: a changed
condition moves to the end of the list with new timestamps, Running and Restarting replace each other, a
terminal or Suspended condition turns Running False, and nothing changes after Failed.

Faults are injected per request (``inject``): an HTTP status (5xx, 429 with Retry-After, 403 with the real
message), a connection reset with no reply, a delay, or a reply lost after the request was carried out.

Every request is recorded (``requests``), answered or not, with what the API server's RBAC authorizer would check
for it (``Request.access``: verb, API group, resource and subresource), so a test can tell which permissions a
client used.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.operator_rules import webhook_violations

JOB_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(/(?P<name>[^/]+))?$"
)
POD_LIST = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/log$")
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
RESET = 0  # a Fault status: the connection is reset instead of answered
SERVICE_ACCOUNT = "system:serviceaccount:kubeflow:pipeline-runner"
VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}
# Any resource path: /api/v1/... (the core group) or /apis/<group>/<version>/..., namespaced or not.
RESOURCE_PATH = re.compile(
    r"^/(?:api/[^/]+|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<subresource>[^/]+))?)?$"
)
REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}
OPERATOR_REASON = {  # the Training Operator's condition reasons, for steps that name none
    "Created": "PyTorchJobCreated",
    "Running": "PyTorchJobRunning",
    "Restarting": "PyTorchJobRestarting",
    "Suspended": "PyTorchJobSuspended",
    "Succeeded": "PyTorchJobSucceeded",
    "Failed": "PyTorchJobFailed",
}
STARTED = ("Running", "Restarting")
FINISHED = ("Succeeded", "Failed")


@dataclass
class Step:
    after: float  # seconds after creation
    condition: str  # Created, Running, Restarting, Suspended, Succeeded, Failed
    reason: str = ""
    message: str = ""


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


@dataclass
class FakeJob:
    body: dict
    created_at: float  # time.monotonic() at creation
    created_wall: float  # time.time() at creation, for timestamps
    script: list[Step]
    deletion_requested_at: float | None = None
    propagation: str = ""

    @property
    def deleted(self) -> bool:
        """A DELETE was accepted: the job is being deleted, or is gone."""
        return self.deletion_requested_at is not None

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def exists(self, now: float, deletion_seconds: float) -> bool:
        if self.deletion_requested_at is None:
            return True
        return self.propagation == "Foreground" and now < self.deletion_requested_at + deletion_seconds

    def pods_exist(self, now: float, deletion_seconds: float) -> bool:
        if self.deletion_requested_at is None or self.propagation == "Orphan":
            return True
        return now < self.deletion_requested_at + deletion_seconds

    def reached(self, now: float) -> list[Step]:
        return [step for step in sorted(self.script, key=lambda s: s.after) if now - self.created_at >= step.after]

    def phase(self, now: float) -> str:
        """Created (pods pending), Running, Restarting, Suspended, Succeeded or Failed: the latest step reached."""
        reached = [step.condition for step in self.reached(now)]
        for terminal in FINISHED:
            if terminal in reached:
                return terminal
        return reached[-1] if reached else "Created"

    def finished_at(self) -> float | None:
        """Seconds after creation at which the job Succeeded or Failed, if it ever does."""
        return min((s.after for s in self.script if s.condition in FINISHED), default=None)

    def started_at(self) -> float | None:
        return min((s.after for s in self.script if s.condition in STARTED), default=None)

    def stamp(self, after: float, nanos: bool = False) -> str:
        return _rfc3339(self.created_wall + after, nanos)

    def status(self, now: float) -> dict:
        conditions: list[dict] = []
        for step in self.reached(now):
            conditions = _set_condition(conditions, step, self.stamp(step.after), self.name)
        return {"conditions": conditions, "startTime": self.stamp(0)}

    def as_object(self, now: float, deletion_seconds: float) -> dict:
        metadata = dict(self.body["metadata"])
        if self.deleted:
            metadata["deletionTimestamp"] = _rfc3339(self.created_wall + self.deletion_requested_at - self.created_at)
            metadata["deletionGracePeriodSeconds"] = 0
            metadata["finalizers"] = ["foregroundDeletion"]
        return {**self.body, "metadata": metadata, "status": self.status(now)}


def _set_condition(conditions: list[dict], step: Step, stamp: str, name: str) -> list[dict]:
    """The Training Operator's setCondition: the changed condition moves to the end; nothing changes after Failed."""
    if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
        return conditions
    kept = []
    for condition in conditions:
        if condition["type"] == step.condition or {condition["type"], step.condition} == {"Running", "Restarting"}:
            continue
        if condition["type"] == "Running" and step.condition in (*FINISHED, "Suspended"):
            condition = {**condition, "status": "False"}
        if condition["type"] == "Suspended" and step.condition == "Running":  # resumed
            condition = {**condition, "status": "False", "reason": "PyTorchJobResumed", "lastTransitionTime": stamp}
        kept.append(condition)
    message = step.message or f"PyTorchJob {name} is {step.condition.lower()}."
    reason = step.reason or OPERATOR_REASON.get(step.condition, step.condition)
    return kept + [
        {
            "type": step.condition,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
        }
    ]


def _rfc3339(epoch_seconds: float, nanos: bool = False) -> str:
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
            _container_status(
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


def _container_status(name: str, image: str, state: dict, ready: bool = False) -> dict:
    return {"name": name, "image": image, "imageID": "", "ready": ready, "restartCount": 0, "state": state}


@dataclass
class FakeKube:
    script: list[Step] = field(
        default_factory=lambda: [Step(0, "Created"), Step(0.2, "Running"), Step(0.6, "Succeeded")]
    )
    # The master's log: a str is written when the master starts, (seconds after creation, str) at that time.
    log_lines: list = field(default_factory=lambda: ["rank 0 starting", "epoch 1/1 done", "training finished"])
    deletion_seconds: float = 0.1  # how long a deleted job's pods take to terminate
    log_stream_seconds: float = 0.0  # > 0: every follow stream is ended after this long, the container running or not
    sidecars: list[str] = field(default_factory=list)  # containers a mutating webhook adds to every pod
    pending_pods: dict[str, dict] = field(default_factory=dict)  # replica type (master, worker) -> status until Running
    jobs: dict = field(default_factory=dict)  # (namespace, name) -> the latest FakeJob of that name
    created: list = field(default_factory=list)  # every FakeJob ever created
    requests: list[Request] = field(default_factory=list)  # every request, in arrival order
    faults: list = field(default_factory=list)

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
        self.lock = threading.Lock()
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

    # --- what the server knows -------------------------------------------------------------------------------

    def existing(self, namespace: str, name: str, now: float) -> FakeJob | None:
        job = self.jobs.get((namespace, name))
        return job if job is not None and job.exists(now, self.deletion_seconds) else None

    def pods(self, namespace: str, now: float) -> list[dict]:
        pods = []
        for (job_namespace, _), job in list(self.jobs.items()):
            if job_namespace == namespace and job.pods_exist(now, self.deletion_seconds):
                pods += self._pods_of(job, now)
        return pods

    def _pods_of(self, job: FakeJob, now: float) -> list[dict]:
        phase = job.phase(now)
        if phase == "Suspended":  # the operator deletes a suspended job's pods
            return []
        pods = []
        for replica_type, replica in job.body["spec"].get("pytorchReplicaSpecs", {}).items():
            template = replica["template"]
            for index in range(replica.get("replicas", 1)):
                rtype = replica_type.lower()
                name = f"{job.name}-{rtype}-{index}"
                labels = {
                    **template.get("metadata", {}).get("labels", {}),
                    "training.kubeflow.org/job-name": job.name,
                    "training.kubeflow.org/operator-name": "pytorchjob-controller",
                    "training.kubeflow.org/replica-type": rtype,
                    "training.kubeflow.org/replica-index": str(index),
                }
                if rtype == "master":
                    labels["training.kubeflow.org/job-role"] = "master"
                containers = [c["name"] for c in template["spec"]["containers"]] + list(self.sidecars)
                image = template["spec"]["containers"][0]["image"]
                metadata = {"name": name, "namespace": job.body["metadata"]["namespace"], "labels": labels}
                metadata["uid"] = f"{job.body['metadata']['uid']}-{name}"
                if job.deleted and job.propagation != "Orphan":
                    metadata["deletionTimestamp"] = _rfc3339(time.time())
                pods.append(
                    {
                        "metadata": metadata,
                        "spec": {"containers": [{"name": c, "image": image} for c in containers]},
                        "status": self._pod_status(phase, rtype, containers, image),
                    }
                )
        return pods

    def _pod_status(self, phase: str, replica_type: str, containers: list[str], image: str) -> dict:
        if phase == "Created":
            waiting = {"waiting": {"reason": "ContainerCreating"}}
            default = {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [_container_status(c, image, waiting) for c in containers],
            }
            return self.pending_pods.get(replica_type, default)
        pod_phase = "Running" if phase in STARTED else phase
        if pod_phase == "Running":
            state = {"running": {"startedAt": _rfc3339(time.time())}}
        else:
            state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "reason": "Completed"}}
        return {
            "phase": pod_phase,
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [_container_status(c, image, state, pod_phase == "Running") for c in containers],
        }

    def container_end(self, job: FakeJob) -> float | None:
        """Seconds after creation at which the job's containers end (it finished, or was deleted); None: not yet."""
        ends = job.finished_at()
        if job.deleted and job.propagation != "Orphan":
            deleted_after = job.deletion_requested_at - job.created_at
            ends = deleted_after if ends is None else min(ends, deleted_after)
        return ends

    def log_of(self, job: FakeJob, pod_name: str, container: str) -> list[tuple[float, str]]:
        """What a container writes: (seconds after creation, text). Only the master's training container writes."""
        master = job.body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"]
        if container != master or pod_name != f"{job.name}-master-0":
            return []
        started, ends = job.started_at() or 0.0, self.container_end(job)
        lines = []
        for entry in self.log_lines:
            after, text = (started, entry) if isinstance(entry, str) else entry
            after = max(after, started)
            if ends is None or after <= ends:
                lines.append((after, text))
        return sorted(lines, key=lambda line: line[0])


def _query_bool(query: dict[str, list[str]], name: str) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool: the Python client sends
    "True")."""
    value = query.get(name, ["false"])[0]
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False", ""):
        return False
    raise ValueError(f'{name}: Invalid value: "{value}": strconv.ParseBool: parsing "{value}": invalid syntax')


def _status(code: int, message: str, reason: str = "") -> dict:
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

        def _serve(self, method: str, route: Callable[[Any, dict], Any]) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            request = Request(method, url.path, url.query)
            server.requests.append(request)
            fault = server._take_fault(method, url.path)
            if fault and fault.delay:
                time.sleep(fault.delay)
            if fault and fault.status is not None and not fault.carried_out:
                return self._fail(fault, request)
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
            return self._send(fault.status, _status(fault.status, message), headers)

        # --- verbs ---------------------------------------------------------------------------------------------

        def do_POST(self):
            self._serve("POST", self._create)

        def do_GET(self):
            self._serve("GET", self._get)

        def do_DELETE(self):
            self._serve("DELETE", self._delete)

        # --- routes --------------------------------------------------------------------------------------------

        def _create(self, url, body):
            match = JOB_PATH.match(url.path)
            if not match or match["name"]:
                return 404, _status(404, "the server could not find the requested resource")
            name = body.get("metadata", {}).get("name", "")
            violations = webhook_violations(body)
            if violations:
                message = "admission webhook denied the request: " + "; ".join(violations)
                return 422, _status(422, message)
            now = time.monotonic()
            with server.lock:
                if server.existing(match["ns"], name, now):
                    message = f'{match["plural"]}.{match["group"]} "{name}" already exists'
                    return 409, _status(409, message)
                body["metadata"]["uid"] = f"uid-{len(server.created) + 1}"
                body["metadata"]["creationTimestamp"] = _rfc3339(time.time())
                job = FakeJob(body, now, time.time(), list(server.script))
                server.jobs[(match["ns"], name)] = job
                server.created.append(job)
            return 201, job.as_object(now, server.deletion_seconds)

        def _get(self, url, _body):
            now = time.monotonic()
            query = parse_qs(url.query)
            if match := JOB_PATH.match(url.path):
                if not match["name"]:
                    items = [
                        job.as_object(now, server.deletion_seconds)
                        for (ns, name), job in list(server.jobs.items())
                        if ns == match["ns"] and server.existing(ns, name, now)
                    ]
                    return 200, {"apiVersion": f"{match['group']}/{match['version']}", "kind": "List", "items": items}
                job = server.existing(match["ns"], match["name"], now)
                if job is None:
                    return 404, _status(404, f'{match["plural"]}.{match["group"]} "{match["name"]}" not found')
                return 200, job.as_object(now, server.deletion_seconds)
            if match := POD_LIST.match(url.path):
                try:
                    selected = selector_matcher(query.get("labelSelector", [""])[0])
                except ValueError as error:
                    return 400, _status(400, str(error))
                items = [pod for pod in server.pods(match["ns"], now) if selected(pod["metadata"]["labels"])]
                return 200, {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                }
            if match := POD_LOG.match(url.path):
                return self._log(match["ns"], match["pod"], query, now)
            return 404, _status(404, "the server could not find the requested resource")

        def _delete(self, url, body):
            match = JOB_PATH.match(url.path)
            if not match or not match["name"]:
                return 404, _status(404, "the server could not find the requested resource")
            # The API server reads DeleteOptions from the body when there is one, else from the query.
            query = parse_qs(url.query)
            policy = body.get("propagationPolicy") if body else query.get("propagationPolicy", [None])[0]
            if policy is not None and policy not in PROPAGATION_POLICIES:
                message = f'propagationPolicy: Unsupported value: "{policy}": supported values: ' + ", ".join(
                    f'"{p}"' for p in PROPAGATION_POLICIES
                )
                return 422, _status(422, message)
            now = time.monotonic()
            with server.lock:
                job = server.existing(match["ns"], match["name"], now)
                if job is None:
                    return 404, _status(404, f'{match["plural"]}.{match["group"]} "{match["name"]}" not found')
                if not job.deleted:
                    job.deletion_requested_at = now
                    job.propagation = policy or "Background"  # the default for custom resources
                if job.exists(now, server.deletion_seconds):  # still there: answered with the object, 202
                    return 202, job.as_object(now, server.deletion_seconds)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

        def _log(self, namespace, pod_name, query, now):
            found = [
                (job, pod)
                for (ns, _), job in list(server.jobs.items())
                if ns == namespace and job.pods_exist(now, server.deletion_seconds)
                for pod in server._pods_of(job, now)
                if pod["metadata"]["name"] == pod_name
            ]
            if not found:
                return 404, _status(404, f'pods "{pod_name}" not found')
            job, pod = found[-1]
            names = [c["name"] for c in pod["spec"]["containers"]]
            container = query.get("container", [""])[0]
            if not container:
                if len(names) > 1:
                    message = (
                        f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(names)}]"
                    )
                    return 400, _status(400, message)
                container = names[0]
            if container not in names:
                return 400, _status(400, f"container {container} is not valid for pod {pod_name}")
            if pod["status"]["phase"] == "Pending":
                waiting = "ContainerCreating"
                for status in pod["status"].get("containerStatuses", []):
                    if status["name"] == container:
                        waiting = status["state"].get("waiting", {}).get("reason", waiting)
                message = f'container "{container}" in pod "{pod_name}" is waiting to start: {waiting}'
                return 400, _status(400, message)
            try:
                timestamps, follow = (_query_bool(query, name) for name in ("timestamps", "follow"))
            except ValueError as error:
                return 400, _status(400, str(error))
            lines = server.log_of(job, pod_name, container)

            def render(after: float, text: str) -> bytes:
                return (f"{job.stamp(after, nanos=True)} {text}\n" if timestamps else f"{text}\n").encode()

            if not follow:
                body = b"".join(render(a, t) for a, t in lines if now - job.created_at >= a)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            self._stream(job, pod_name, container, render)
            return None

        def _stream(self, job, pod_name, container, render) -> None:
            """Write each line when it is due; end when the container ends, or when log_stream_seconds ran out."""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            opened, written = time.monotonic(), 0
            try:
                while not server.stopping.is_set():
                    now = time.monotonic()
                    ends = server.container_end(job)
                    lines = server.log_of(job, pod_name, container)
                    due = [line for line in lines if now - job.created_at >= line[0]]
                    for after, text in due[written:]:
                        chunk = render(after, text)
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    written = len(due)
                    if ends is not None and now - job.created_at >= ends:
                        break
                    if server.log_stream_seconds and now - opened >= server.log_stream_seconds:
                        break
                    time.sleep(0.01)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client went away
                self.close_connection = True

    return Handler


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
