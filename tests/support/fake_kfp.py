"""A Kubeflow Pipelines v2beta1 API server on 127.0.0.1 that checks every request against the real spec.

The spec is KFP's own swagger (``shared/reference/kfp-api``): a request's path and method must be
declared, its query parameters declared with the right types (a ``filter`` must be a JSON ``Filter``),
a JSON body must validate against the referenced definition with unknown fields rejected (as
grpc-gateway does), and a multipart upload must carry ``uploadfile``. A bad request gets 400 with a
``googleRpcStatus`` body and lands in :attr:`FakeKfp.violations`, so a test can fail loudly. Every
answer is checked against the documented response schema too.

It keeps pipelines, versions, experiments, runs and recurring runs in memory; a run goes
PENDING → RUNNING → its outcome (SUCCEEDED unless a test sets :attr:`FakeKfp.outcome`) over GETs.
With ``token`` set it wants ``Authorization: Bearer <token>``: 401 without one, 403 for another
token or a namespace outside ``namespaces``.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import itertools
import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO_ROOT.parent / "shared" / "reference" / "kfp-api"

# google.rpc.Code
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED = 3, 5, 6, 7, 16
HTTP_STATUS = {INVALID_ARGUMENT: 400, NOT_FOUND: 404, ALREADY_EXISTS: 409, PERMISSION_DENIED: 403, UNAUTHENTICATED: 401}


class ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _strict(schema):
    """Unknown fields rejected: every object schema with properties gets additionalProperties false."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def date_time(value):
        if isinstance(value, str):
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    @checker.checks("int64")
    def int64(value):  # proto3 JSON: int64 travels as a decimal string
        return not isinstance(value, str) or re.fullmatch(r"-?\d+", value) is not None

    return checker


class Spec:
    """The swagger paths and definitions, and validators for bodies and answers."""

    def __init__(self, spec_dir: Path = SPEC_DIR):
        main = json.loads((spec_dir / "kfp_api_single_file.swagger.json").read_text())
        upload = json.loads((spec_dir / "pipeline.upload.swagger.json").read_text())
        self.definitions = _strict(main["definitions"])
        self.operations: list[tuple[re.Pattern, str, int, dict]] = []
        paths = dict(main["paths"])
        paths.update(upload["paths"])  # the upload endpoints with their multipart form
        for template, methods in paths.items():
            literal = len(re.sub(r"\{[^}]+\}", "", template))
            pattern = re.compile(
                "^"
                + re.sub(
                    r"\{([^}]+)\}",
                    lambda m: f"(?P<{re.sub(r'[^a-zA-Z0-9_]', '_', m.group(1))}>[^/]+?)",
                    template,
                )
                + "$"
            )
            for method, operation in methods.items():
                self.operations.append((pattern, method.upper(), literal, operation))
        self.checker = _format_checker()

    def operation(self, method: str, path: str) -> tuple[dict, dict]:
        matches = [
            (literal, operation, match.groupdict())
            for pattern, verb, literal, operation in self.operations
            if verb == method and (match := pattern.match(path))
        ]
        if not matches:
            raise ApiError(INVALID_ARGUMENT, f"{method} {path} is not in the KFP v2beta1 API")
        literal, operation, groups = max(matches, key=lambda item: item[0])
        return operation, {key: unquote(value) for key, value in groups.items()}

    def errors(self, schema: dict, value) -> list[str]:
        validator = jsonschema.Draft4Validator({"definitions": self.definitions, **schema}, format_checker=self.checker)
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in validator.iter_errors(value)
        ]

    def check_query(self, operation: dict, query: dict[str, list[str]]) -> None:
        declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        for name, values in query.items():
            if name not in declared:
                raise ApiError(
                    INVALID_ARGUMENT, f"query parameter {name!r} is not declared for {operation['operationId']}"
                )
            parameter = declared[name]
            if len(values) > 1 and parameter.get("type") != "array":
                raise ApiError(INVALID_ARGUMENT, f"query parameter {name!r} given {len(values)} times")
            value = values[0]
            kind = parameter.get("type")
            if kind == "integer" and not re.fullmatch(r"-?\d+", value):
                raise ApiError(INVALID_ARGUMENT, f"query parameter {name}={value!r} is not an integer")
            if kind == "boolean" and value not in ("true", "false"):
                raise ApiError(INVALID_ARGUMENT, f"query parameter {name}={value!r} is not a boolean")
            if name == "filter":
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError:
                    raise ApiError(INVALID_ARGUMENT, f"filter {value!r} is not JSON") from None
                problems = self.errors({"$ref": "#/definitions/v2beta1Filter"}, parsed)
                if problems:
                    raise ApiError(INVALID_ARGUMENT, f"filter is not a v2beta1Filter: {'; '.join(problems)}")

    def check_body(self, operation: dict, content_type: str, raw: bytes):
        """The parsed JSON body, or the multipart form as {name: (filename, bytes)}."""
        parameters = operation.get("parameters", [])
        body_parameter = next((p for p in parameters if p["in"] == "body"), None)
        form = [p for p in parameters if p["in"] == "formData"]
        if form:
            if not content_type.startswith("multipart/form-data"):
                raise ApiError(INVALID_ARGUMENT, f"{operation['operationId']} takes multipart/form-data")
            parts = _multipart(content_type, raw)
            declared = {p["name"] for p in form}
            unknown = sorted(set(parts) - declared)
            if unknown:
                raise ApiError(INVALID_ARGUMENT, f"undeclared form field(s) {unknown}")
            for parameter in form:
                if parameter.get("required") and parameter["name"] not in parts:
                    raise ApiError(INVALID_ARGUMENT, f"multipart form lacks {parameter['name']!r}")
                if parameter.get("type") == "file" and parameter["name"] in parts and not parts[parameter["name"]][0]:
                    raise ApiError(INVALID_ARGUMENT, f"form field {parameter['name']!r} must be a file (no filename)")
            return parts
        if body_parameter is None:
            if raw.strip():
                raise ApiError(INVALID_ARGUMENT, f"{operation['operationId']} takes no body")
            return None
        if not content_type.startswith("application/json"):
            raise ApiError(INVALID_ARGUMENT, f"body must be application/json, got {content_type!r}")
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            raise ApiError(INVALID_ARGUMENT, "body is not JSON") from None
        if body is None and body_parameter.get("required"):
            raise ApiError(INVALID_ARGUMENT, f"{operation['operationId']} needs a body")
        problems = self.errors(body_parameter["schema"], body)
        if problems:
            raise ApiError(INVALID_ARGUMENT, f"body does not match {body_parameter['schema']}: {'; '.join(problems)}")
        return body

    def check_answer(self, operation: dict, answer) -> list[str]:
        return self.errors(operation["responses"]["200"]["schema"], answer)


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    if not message.is_multipart():
        raise ApiError(INVALID_ARGUMENT, "malformed multipart body")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (part.get_filename(), part.get_payload(decode=True))
    return parts


def _spec_struct(text: str):
    """A version's pipeline_spec as the API server answers it: bare, or with its platform spec."""
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    if len(documents) > 1:
        platform = {}
        for doc in documents[1:]:
            platform.update(doc)
        return {"pipeline_spec": documents[0], "platform_spec": platform}
    return documents[0]


class FakeKfp:
    def __init__(self, token: str | None = None, namespaces: tuple[str, ...] | None = None):
        self.spec = Spec()
        self.token = token
        self.namespaces = namespaces
        self.outcome = "SUCCEEDED"  # what new runs end as: SUCCEEDED or FAILED
        self.requests: list[dict] = []  # every request: method, path, query, body
        self.violations: list[str] = []  # requests that break the spec, answers that break it
        self.log: list[str] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self._run_plans: dict[str, list[str]] = {}  # the states each run's next GETs show
        self._clock = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKfp:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake._handle(self)

            do_POST = do_DELETE = do_PATCH = do_PUT = do_GET

            def log_message(self, format, *args):
                fake.log.append(format % args)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- plumbing --------------------------------------------------------------------------
    def _now(self) -> str:
        moment = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=next(self._clock))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        query = parse_qs(split.query, keep_blank_values=True)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        record = {"method": handler.command, "path": split.path, "query": query, "body": None}
        self.requests.append(record)
        operation = None
        try:
            operation, path_params = self.spec.operation(handler.command, split.path)
            self.spec.check_query(operation, query)
            body = self.spec.check_body(operation, handler.headers.get("Content-Type", ""), raw)
            record["body"] = body
            self._authenticate(handler.headers.get("Authorization"))
            params = {name: values[0] for name, values in query.items()}
            with self._lock:
                answer = getattr(self, "_" + operation["operationId"])(path_params, params, body)
            problems = self.spec.check_answer(operation, answer)
            if problems:
                self.violations.append(f"answer to {operation['operationId']} breaks the spec: {problems}")
            self._send(handler, 200, answer)
        except ApiError as error:
            if error.code == INVALID_ARGUMENT:
                self.violations.append(f"{handler.command} {handler.path}: {error.message}")
            self._send(handler, HTTP_STATUS[error.code], {"code": error.code, "message": error.message, "details": []})
        except AttributeError as error:
            name = operation["operationId"] if operation else "?"
            self._send(handler, 501, {"code": 12, "message": f"{name} not implemented by the fake: {error}"})

    @staticmethod
    def _send(handler, status: int, answer) -> None:
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _authenticate(self, header: str | None) -> None:
        if self.token is None:
            return
        if not header:
            raise ApiError(UNAUTHENTICATED, "Request header error: there is no user identity header.")
        if header != f"Bearer {self.token}":
            raise ApiError(PERMISSION_DENIED, "Failed to authorize the request: the token is not valid")

    def _namespace(self, namespace: str | None) -> None:
        if self.token is not None and self.namespaces is not None and namespace and namespace not in self.namespaces:
            raise ApiError(PERMISSION_DENIED, f"User is not authorized to access namespace {namespace}")

    @staticmethod
    def _find(store: dict, key: str, kind: str) -> dict:
        if key not in store:
            raise ApiError(NOT_FOUND, f"{kind} {key} not found")
        return store[key]

    @staticmethod
    def _page(items: list[dict], params: dict, key: str) -> dict:
        sort_by = params.get("sort_by", "")
        field, _, order = sort_by.partition(" ")
        if field:
            items = sorted(items, key=lambda item: item.get(field, ""), reverse=order == "desc")
        start = int(params.get("page_token") or 0)
        size = int(params.get("page_size") or 20)
        page = items[start : start + size]
        answer = {key: copy.deepcopy(page), "total_size": len(items)}
        if start + size < len(items):
            answer["next_page_token"] = str(start + size)
        return answer

    @staticmethod
    def _filtered(items: list[dict], params: dict) -> list[dict]:
        if "filter" not in params:
            return items
        for predicate in json.loads(params["filter"]).get("predicates", []):
            if predicate.get("operation") == "EQUALS":
                items = [i for i in items if i.get(predicate["key"]) == predicate.get("string_value")]
        return items

    # -- health ----------------------------------------------------------------------------
    def _HealthzService_GetHealthz(self, path, params, body):
        return {"multi_user": self.token is not None}

    # -- pipelines -------------------------------------------------------------------------
    def _PipelineService_GetPipelineByName(self, path, params, body):
        namespace = params.get("namespace", "")
        self._namespace(namespace)
        for pipeline in self.pipelines.values():
            if pipeline["name"] == path["name"] and pipeline.get("namespace", "") == namespace:
                return pipeline
        raise ApiError(NOT_FOUND, f"Failed to get a pipeline with name {path['name']} and namespace {namespace}")

    def _PipelineService_ListPipelines(self, path, params, body):
        namespace = params.get("namespace", "")
        self._namespace(namespace)
        items = [p for p in self.pipelines.values() if p.get("namespace", "") in ("", namespace)]
        return self._page(self._filtered(items, params), params, "pipelines")

    def _PipelineService_CreatePipeline(self, path, params, body):
        if not body.get("name"):
            raise ApiError(INVALID_ARGUMENT, "pipeline name is required")
        self._namespace(body.get("namespace"))
        for pipeline in self.pipelines.values():
            if pipeline["name"] == body["name"] and pipeline.get("namespace", "") == body.get("namespace", ""):
                raise ApiError(ALREADY_EXISTS, f"pipeline {body['name']} already exists")
        pipeline = {**body, "pipeline_id": str(uuid.uuid4()), "created_at": self._now()}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def _PipelineService_GetPipeline(self, path, params, body):
        return self._find(self.pipelines, path["pipeline_id"], "pipeline")

    def _PipelineService_ListPipelineVersions(self, path, params, body):
        self._find(self.pipelines, path["pipeline_id"], "pipeline")
        items = [v for v in self.versions.values() if v["pipeline_id"] == path["pipeline_id"]]
        return self._page(self._filtered(items, params), params, "pipeline_versions")

    def _PipelineService_GetPipelineVersion(self, path, params, body):
        version = self._find(self.versions, path["pipeline_version_id"], "pipeline version")
        if version["pipeline_id"] != path["pipeline_id"]:
            raise ApiError(NOT_FOUND, "pipeline version not found in this pipeline")
        return version

    def _UploadPipelineVersion(self, path, params, form):
        pipeline = self._find(self.pipelines, params.get("pipelineid", ""), "pipeline")
        name = params.get("name") or form["uploadfile"][0]
        if any(v["name"] == name and v["pipeline_id"] == pipeline["pipeline_id"] for v in self.versions.values()):
            raise ApiError(ALREADY_EXISTS, f"pipeline version {name} already exists")
        try:
            spec = _spec_struct(form["uploadfile"][1].decode())
        except (yaml.YAMLError, UnicodeDecodeError, IndexError) as error:
            raise ApiError(INVALID_ARGUMENT, f"invalid pipeline spec: {error}") from None
        version = {
            "pipeline_id": pipeline["pipeline_id"],
            "pipeline_version_id": str(uuid.uuid4()),
            "name": name,
            "display_name": params.get("display_name") or name,
            "created_at": self._now(),
            "pipeline_spec": spec,
        }
        if params.get("description"):
            version["description"] = params["description"]
        self.versions[version["pipeline_version_id"]] = version
        return version

    # -- experiments -----------------------------------------------------------------------
    def _ExperimentService_ListExperiments(self, path, params, body):
        namespace = params.get("namespace", "")
        self._namespace(namespace)
        items = [e for e in self.experiments.values() if e.get("namespace", "") == namespace]
        return self._page(self._filtered(items, params), params, "experiments")

    def _ExperimentService_CreateExperiment(self, path, params, body):
        if not body.get("display_name"):
            raise ApiError(INVALID_ARGUMENT, "experiment display_name is required")
        self._namespace(body.get("namespace"))
        for experiment in self.experiments.values():
            same_namespace = experiment.get("namespace", "") == body.get("namespace", "")
            if experiment["display_name"] == body["display_name"] and same_namespace:
                raise ApiError(ALREADY_EXISTS, f"experiment {body['display_name']} already exists")
        experiment = {
            **body,
            "experiment_id": str(uuid.uuid4()),
            "created_at": self._now(),
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    # -- runs ------------------------------------------------------------------------------
    def _check_pipeline_source(self, body: dict) -> dict:
        """The pipeline spec a run or recurring run will use (checks exactly one source is given)."""
        has_spec, reference = "pipeline_spec" in body, body.get("pipeline_version_reference")
        if has_spec == bool(reference):
            raise ApiError(INVALID_ARGUMENT, "give exactly one of pipeline_spec and pipeline_version_reference")
        if has_spec:
            spec = body["pipeline_spec"]
        else:
            pipeline = self._find(self.pipelines, reference.get("pipeline_id", ""), "pipeline")
            if reference.get("pipeline_version_id"):
                spec = self._find(self.versions, reference["pipeline_version_id"], "pipeline version")["pipeline_spec"]
            else:
                versions = [v for v in self.versions.values() if v["pipeline_id"] == pipeline["pipeline_id"]]
                if not versions:
                    raise ApiError(NOT_FOUND, "pipeline has no versions")
                spec = max(versions, key=lambda v: v["created_at"])["pipeline_spec"]
        if "root" not in spec and "pipeline_spec" in spec:
            spec = spec["pipeline_spec"]
        declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        unknown = sorted(set((body.get("runtime_config") or {}).get("parameters", {})) - set(declared))
        if unknown:
            raise ApiError(INVALID_ARGUMENT, f"unknown runtime parameter(s) {unknown}")
        return spec

    def _experiment_for(self, body: dict) -> dict:
        experiment = self._find(self.experiments, body.get("experiment_id", ""), "experiment")
        self._namespace(experiment.get("namespace"))
        return experiment

    def _RunService_CreateRun(self, path, params, body):
        if not body.get("display_name"):
            raise ApiError(INVALID_ARGUMENT, "run display_name is required")
        self._experiment_for(body)
        self._check_pipeline_source(body)
        now = self._now()
        run = {
            **body,
            "run_id": str(uuid.uuid4()),
            "created_at": now,
            "scheduled_at": now,
            "storage_state": "AVAILABLE",
            "state": "PENDING",
            "state_history": [{"update_time": now, "state": "PENDING"}],
        }
        self.runs[run["run_id"]] = run
        self._run_plans[run["run_id"]] = ["PENDING", "RUNNING", "RUNNING", self.outcome]
        return run

    def _RunService_GetRun(self, path, params, body):
        run = self._find(self.runs, path["run_id"], "run")
        plan = self._run_plans.get(run["run_id"], [])
        if plan:
            state = plan.pop(0)
            if state != run["state"]:
                now = self._now()
                entry = {"update_time": now, "state": state}
                if state == "FAILED":
                    entry["error"] = {"code": 2, "message": "task train failed: exit code 1"}
                    run["run_details"] = {
                        "task_details": [
                            {
                                "run_id": run["run_id"],
                                "task_id": "train-1",
                                "display_name": "train",
                                "state": "FAILED",
                                "error": {"code": 2, "message": "CUDA out of memory"},
                            }
                        ]
                    }
                if state in ("SUCCEEDED", "FAILED"):
                    run["finished_at"] = now
                run["state"] = state
                run["state_history"].append(entry)
        return run

    # -- recurring runs --------------------------------------------------------------------
    def _RecurringRunService_CreateRecurringRun(self, path, params, body):
        for field in ("display_name", "trigger", "max_concurrency"):
            if not body.get(field):
                raise ApiError(INVALID_ARGUMENT, f"recurring run {field} is required")
        if not 1 <= int(body["max_concurrency"]) <= 10:
            raise ApiError(INVALID_ARGUMENT, "max_concurrency must be in [1, 10]")
        trigger = body["trigger"]
        if len(trigger) != 1:
            raise ApiError(INVALID_ARGUMENT, "trigger needs exactly one of cron_schedule, periodic_schedule")
        if "cron_schedule" in trigger:
            cron = trigger["cron_schedule"].get("cron", "")
            if not cron.startswith("@") and len(cron.split()) != 6:
                raise ApiError(INVALID_ARGUMENT, f"cron {cron!r} must have 6 fields (seconds first)")
        elif int(trigger["periodic_schedule"].get("interval_second", "0")) <= 0:
            raise ApiError(INVALID_ARGUMENT, "interval_second must be positive")
        experiment = self._experiment_for(body)
        self._check_pipeline_source(body)
        now = self._now()
        recurring = {
            **body,
            "recurring_run_id": str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "status": "DISABLED" if body.get("mode") == "DISABLE" else "ENABLED",
        }
        if experiment.get("namespace"):
            recurring["namespace"] = experiment["namespace"]
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring

    def _RecurringRunService_ListRecurringRuns(self, path, params, body):
        namespace = params.get("namespace", "")
        self._namespace(namespace)
        items = [r for r in self.recurring_runs.values() if r.get("namespace", "") == namespace]
        if params.get("experiment_id"):
            items = [r for r in items if r.get("experiment_id") == params["experiment_id"]]
        return self._page(items, params, "recurringRuns")

    def _RecurringRunService_GetRecurringRun(self, path, params, body):
        return self._find(self.recurring_runs, path["recurring_run_id"], "recurring run")

    def _RecurringRunService_EnableRecurringRun(self, path, params, body):
        self._find(self.recurring_runs, path["recurring_run_id"], "recurring run")["status"] = "ENABLED"
        return {}

    def _RecurringRunService_DisableRecurringRun(self, path, params, body):
        self._find(self.recurring_runs, path["recurring_run_id"], "recurring run")["status"] = "DISABLED"
        return {}

    def _RecurringRunService_DeleteRecurringRun(self, path, params, body):
        self._find(self.recurring_runs, path["recurring_run_id"], "recurring run")
        del self.recurring_runs[path["recurring_run_id"]]
        return {}
