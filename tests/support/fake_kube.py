"""A Kubernetes API server on 127.0.0.1 that speaks just enough for the job launcher.

It answers the endpoints the official Python client calls for a custom
resource (create, get, delete) and for pods (list by label selector, log with
follow), and drives each created job through a scripted list of status
conditions over time, as the Training Operator would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

JOB_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(/(?P<name>[^/]+))?$"
)
POD_LIST = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/log$")


@dataclass
class Step:
    after: float  # seconds after creation
    condition: str  # Created, Running, Succeeded, Failed, ...
    reason: str = ""
    message: str = ""


@dataclass
class FakeJob:
    body: dict
    created_at: float
    script: list[Step]
    deleted: bool = False

    def status(self, now: float) -> dict:
        reached = [step for step in self.script if now - self.created_at >= step.after]
        return {
            "conditions": [
                {
                    "type": step.condition,
                    "status": "True" if i == len(reached) - 1 or step.condition == "Created" else "False",
                    "reason": step.reason,
                    "message": step.message,
                }
                for i, step in enumerate(reached)
            ]
        }

    def started(self, now: float) -> bool:
        return any(s.condition == "Running" and now - self.created_at >= s.after for s in self.script)


@dataclass
class FakeKube:
    script: list[Step] = field(
        default_factory=lambda: [Step(0, "Created"), Step(0.2, "Running"), Step(0.6, "Succeeded")]
    )
    log_lines: list[str] = field(default_factory=lambda: ["rank 0 starting", "epoch 1/1 done", "training finished"])
    jobs: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)

    def start(self) -> FakeKube:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_POST(self):
                url = urlsplit(self.path)
                server.requests.append(("POST", url.path))
                match = JOB_PATH.match(url.path)
                if not match or match["name"]:
                    return self._send(404, {"kind": "Status", "code": 404})
                body = self._body()
                key = (match["ns"], body["metadata"]["name"])
                with server.lock:
                    if key in server.jobs and not server.jobs[key].deleted:
                        return self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                    body["metadata"]["uid"] = f"uid-{len(server.requests)}"
                    server.jobs[key] = FakeJob(body, time.monotonic(), list(server.script))
                return self._send(201, body)

            def do_GET(self):
                url = urlsplit(self.path)
                server.requests.append(("GET", url.path))
                now = time.monotonic()
                if match := JOB_PATH.match(url.path):
                    job = server.jobs.get((match["ns"], match["name"]))
                    if not job or job.deleted:
                        return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return self._send(200, {**job.body, "status": job.status(now)})
                if match := POD_LIST.match(url.path):
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    name = dict(pair.split("=", 1) for pair in selector.split(",") if "=" in pair).get(
                        "training.kubeflow.org/job-name"
                    )
                    job = server.jobs.get((match["ns"], name))
                    items = []
                    if job and not job.deleted and job.started(now):
                        items.append({"metadata": {"name": f"{name}-master-0"}, "status": {"phase": "Running"}})
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                if POD_LOG.match(url.path):
                    body = "".join(f"{line}\n" for line in server.log_lines).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                return self._send(404, {"kind": "Status", "code": 404})

            def do_DELETE(self):
                url = urlsplit(self.path)
                server.requests.append(("DELETE", url.path))
                self._body()
                match = JOB_PATH.match(url.path)
                job = server.jobs.get((match["ns"], match["name"])) if match else None
                if not job or job.deleted:
                    return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                job.deleted = True
                return self._send(200, {"kind": "Status", "status": "Success"})

        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def api_client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def count(self, method: str, suffix: str = "") -> int:
        return sum(1 for m, path in self.requests if m == method and path.endswith(suffix))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
