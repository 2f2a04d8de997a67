"""A Kubeflow Pipelines v2beta1 API server on 127.0.0.1 that reads requests as the real one does and checks them.

The spec is KFP's own swagger (``shared/reference/kfp-api``). A request's path and method must be declared
and its query parameters declared. JSON is read the way KFP's API server reads it (grpc-gateway with
protojson, see :class:`ProtoJson`): field names in snake_case or lowerCamelCase, enums by name or number,
int64 as a string or a number, timestamps in RFC 3339; unknown fields are rejected. A ``filter`` query
parameter is a JSON ``Filter`` read the same way. A multipart upload must carry ``uploadfile``. Every body
is then put in the API's canonical form (snake_case names, enum names, int64 strings) and validated against
the referenced definition. A bad request gets 400 with a ``googleRpcStatus`` body and lands in
:attr:`FakeKfp.violations`, so a test can fail loudly. Every answer is checked against the documented
response schema, and leaves out empty fields as the real server does.

It keeps pipelines, versions, experiments, runs and recurring runs in memory; a run goes through
:attr:`FakeKfp.run_progress` (PENDING, RUNNING, RUNNING), one state per GET, then ends as
:attr:`FakeKfp.outcome` (SUCCEEDED unless a test sets FAILED). With ``token`` set it wants
``Authorization: Bearer <token>`` (health checks excepted, as on the real server): 401 without one, 403
for another token or a namespace outside ``namespaces``.

It also holds ML Metadata as KFP's driver and launcher fill it (:mod:`tests.support.fake_mlmd`), served
over gRPC-Web at ``/ml_metadata.MetadataStoreService/`` as the KFP UI server proxies it: a run's context
when the run is created; when it succeeds, an execution for each task that ran (every task of the root
DAG, and every task named in ``task_artifacts``, which may sit in a condition) with its output artifacts
at the URIs KFP's driver gives them, ``<pipeline root>/<pipeline name>/<run id>/<task>/<salt>/<output>``.
The run's own ``runtime_config.pipeline_root``, else the spec's ``defaultPipelineRoot``, else
``pipeline_root``, else KFP's default ``minio://mlpipeline/v2/artifacts``, as on the real backend. With a
local ``pipeline_root`` it also stands in for the artifact store: each output named in ``task_artifacts``
(``{(task, output): content}``) gets that content as its file.

A task named in :attr:`FakeKfp.cache_hits` is taken from KFP's cache when an earlier run of the same pipeline
computed it: as on the real backend, its execution in this run is CACHED and linked to the earlier run's
artifacts (no file is written under this run), and in the REST API's ``task_details`` (which KFP 2.17 builds
from the Argo workflow's nodes, with neither outputs nor an execution id) its ``executor`` node is SKIPPED
while the task's own node SUCCEEDED. A succeeded run's ``task_details`` have the three nodes KFP's Argo
compiler makes for a container task: ``<task>-driver``, ``<task>``, and its ``executor`` pod (a failed run's
keep one node per task, carrying its error).
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import itertools
import json
import math
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

import jsonschema
import yaml

from tests.support.fake_mlmd import FakeMetadataStore, RecordedOutput

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO_ROOT.parent / "shared" / "reference" / "kfp-api"

# google.rpc.Code
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED = 3, 5, 6, 7
FAILED_PRECONDITION, INTERNAL, UNAUTHENTICATED = 9, 13, 16
HTTP_STATUS = {
    INVALID_ARGUMENT: 400,
    NOT_FOUND: 404,
    ALREADY_EXISTS: 409,
    PERMISSION_DENIED: 403,
    FAILED_PRECONDITION: 400,
    INTERNAL: 500,
    UNAUTHENTICATED: 401,
}

# Enum numbers where the proto's are not 0, 1, 2, ... in the swagger's order
# (backend/api/v2beta1/filter.proto and recurring_run.proto).
ENUM_NUMBERS = {
    "v2beta1PredicateOperation": {
        "OPERATION_UNSPECIFIED": 0,
        "EQUALS": 1,
        "NOT_EQUALS": 2,
        "GREATER_THAN": 3,
        "GREATER_THAN_EQUALS": 5,
        "LESS_THAN": 6,
        "LESS_THAN_EQUALS": 7,
        "IN": 8,
        "IS_SUBSTRING": 9,
    },
    "v2beta1RecurringRunStatus": {"STATUS_UNSPECIFIED": 0, "ENABLED": 1, "DISABLED": 3},
}
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
# protojson's Timestamp: RFC 3339 with an upper-case T, a time zone, and at most nanoseconds.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
GO_BOOLEANS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
GO_BOOLEANS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
FINAL_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"  # a standard install's, from the kfp-launcher ConfigMap
MLMD_PATH = "/ml_metadata."  # what the KFP UI server proxies to ML Metadata's Envoy (frontend/server/app.ts)


class ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def json_name(proto_name: str) -> str:
    """protoc's JSON name of a field: ``interval_second`` -> ``intervalSecond``."""
    head, *rest = proto_name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class ProtoJson:
    """Reads JSON into a message's canonical form the way protojson does, or says what is wrong.

    Accepted as protojson accepts them: a field by its proto name or its JSON (lowerCamelCase) name,
    ``null`` for "not set", an enum by name or number, int64 and int32 as a number or a decimal string,
    a double as a number or a string, a Timestamp in RFC 3339. Rejected: unknown fields, a field given
    under both names, values of the wrong kind. The result uses proto names, enum names and int64
    strings: the form the real server answers in, and the one the swagger describes.
    """

    def __init__(self, definitions: dict):
        self.definitions = definitions

    def read(self, schema: dict, value, where: str):
        name = None
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            schema = self.definitions[name]
        if "enum" in schema:
            return self._enum(name or "enum", schema["enum"], value, where)
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "object":
            return self._object(name, schema, value, where)
        if kind == "array":
            if not isinstance(value, list):
                raise self._bad(where, value, "a JSON array")
            return [self.read(schema["items"], item, f"{where}[{index}]") for index, item in enumerate(value)]
        if kind == "string" and fmt == "int64":
            return str(self._integer(value, where, INT64_RANGE, "an int64"))
        if kind == "integer":
            return self._integer(value, where, INT32_RANGE, "an int32")
        if kind == "number":
            return self._number(value, where)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise self._bad(where, value, "true or false")
            return value
        if kind == "string":
            if not isinstance(value, str):
                raise self._bad(where, value, "a string")
            if fmt == "date-time" and not _is_timestamp(value):
                raise self._bad(where, value, "an RFC 3339 timestamp such as 2025-06-01T03:00:00Z")
            if fmt == "byte" and not _is_base64(value):
                raise self._bad(where, value, "base64")
            return value
        return value  # google.protobuf.Value: any JSON

    def _object(self, name: str | None, schema: dict, value, where: str):
        if not isinstance(value, dict):
            raise self._bad(where, value, "a JSON object")
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        if properties is None and extra:  # map<string, T>
            return {key: self.read(extra, item, f"{where}[{key!r}]") for key, item in value.items()}
        if properties is None or extra is not None:
            return value  # google.protobuf.Struct, map<string, Value>, Any: any JSON object
        by_json_name = {json_name(field): field for field in properties}
        message, given = {}, {}
        for key, item in value.items():
            field = key if key in properties else by_json_name.get(key)
            if field is None:
                raise ApiError(INVALID_ARGUMENT, f'{where}: unknown field "{key}" in {name or "the message"}')
            if field in given:
                raise ApiError(INVALID_ARGUMENT, f'{where}: field {field} given twice ("{given[field]}", "{key}")')
            given[field] = key
            if item is not None:  # null: the field's default, as if it were not there
                message[field] = self.read(properties[field], item, f"{where}.{field}")
        return message

    def written(self, schema: dict, value):
        """``value`` as the server writes it (EmitUnpopulated false): no empty strings, lists, zeros or false."""
        if "$ref" in schema:
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[1]]
        properties = schema.get("properties")
        if schema.get("type") == "array" and isinstance(value, list):
            return [self.written(schema["items"], item) for item in value]
        if properties is None or schema.get("additionalProperties") is not None or not isinstance(value, dict):
            return value  # a scalar, a map, a Struct: written as it is
        fields = {name: self.written(properties.get(name, {}), item) for name, item in value.items()}
        return {name: item for name, item in fields.items() if item not in (None, "", 0, False, [], {})}

    def _enum(self, name: str, names: list[str], value, where: str) -> str:
        numbers = ENUM_NUMBERS.get(name, {member: index for index, member in enumerate(names)})
        if isinstance(value, str) and value in numbers:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            for member, number in numbers.items():
                if number == value:
                    return member
        raise self._bad(where, value, f"a {name} value: one of {', '.join(names)} or its number")

    def _integer(self, value, where: str, bounds: tuple[int, int], what: str) -> int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            number = int(value)
        if number is None or not bounds[0] <= number <= bounds[1]:
            raise self._bad(where, value, what)
        return number

    def _number(self, value, where: str) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number) or value in ("NaN", "Infinity", "-Infinity"):
                    return number
        raise self._bad(where, value, "a number")

    @staticmethod
    def _bad(where: str, value, expected: str) -> ApiError:
        return ApiError(INVALID_ARGUMENT, f"{where}: {json.dumps(value)} is not {expected}")


def _is_timestamp(text: str) -> bool:
    if not RFC3339.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(re.sub(r"\.\d+", "", text).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_base64(text: str) -> bool:
    padded = text + "=" * (-len(text) % 4)
    try:
        base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        return False
    return True


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

    @checker.checks("date-time")
    def date_time(value):
        return not isinstance(value, str) or _is_timestamp(value)

    @checker.checks("int64")
    def int64(value):  # the canonical form: int64 travels as a decimal string
        return not isinstance(value, str) or re.fullmatch(r"-?\d+", value) is not None

    return checker


class Spec:
    """The swagger paths and definitions; reads requests as the real server does and validates answers."""

    def __init__(self, spec_dir: Path = SPEC_DIR):
        main = json.loads((spec_dir / "kfp_api_single_file.swagger.json").read_text())
        upload = json.loads((spec_dir / "pipeline.upload.swagger.json").read_text())
        self.definitions = _strict(main["definitions"])
        self.proto_json = ProtoJson(main["definitions"])
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

    @staticmethod
    def is_upload(operation: dict) -> bool:
        return any(p["in"] == "formData" for p in operation.get("parameters", []))

    def read_query(self, operation: dict, query: dict[str, list[str]]) -> dict:
        """The query parameters by proto name, typed; ``filter`` as its canonical ``Filter``.

        grpc-gateway takes a field by its proto or JSON name and parses its value as Go's strconv does.
        The upload endpoints are plain HTTP handlers that read their exact names as strings. Undeclared
        parameters are refused here (the real server ignores them, which hides a misspelt one).
        """
        declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        if not self.is_upload(operation):
            declared |= {json_name(name): parameter for name, parameter in declared.items()}
        params: dict = {}
        for key, values in query.items():
            if key not in declared:
                raise ApiError(
                    INVALID_ARGUMENT, f"query parameter {key!r} is not declared for {operation['operationId']}"
                )
            parameter = declared[key]
            name = parameter["name"]
            if name in params or len(values) > 1 and parameter.get("type") != "array":
                raise ApiError(INVALID_ARGUMENT, f"query parameter {name!r} given more than once")
            params[name] = self._query_value(parameter, values[0], operation)
        return params

    def _query_value(self, parameter: dict, value: str, operation: dict):
        name, kind = parameter["name"], parameter.get("type")
        if self.is_upload(operation):
            return value
        if kind == "integer" and not re.fullmatch(r"[+-]?\d+", value):
            raise ApiError(INVALID_ARGUMENT, f"query parameter {name}={value!r} is not an integer")
        if kind == "boolean":
            if value not in GO_BOOLEANS:
                raise ApiError(INVALID_ARGUMENT, f"query parameter {name}={value!r} is not a boolean")
            return GO_BOOLEANS[value]
        if name == "filter" and value:
            return self.read_filter(value)
        return value

    def read_filter(self, value: str) -> dict:
        # KFP unescapes the (already decoded) filter once more before protojson reads it.
        text = unquote_plus(value)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ApiError(INVALID_ARGUMENT, f"filter {text!r} is not JSON") from None
        try:
            return self.proto_json.read({"$ref": "#/definitions/v2beta1Filter"}, parsed, "filter")
        except ApiError as error:
            raise ApiError(INVALID_ARGUMENT, f"filter is not a v2beta1Filter: {error.message}") from None

    def read_body(self, operation: dict, content_type: str, raw: bytes):
        """The body in canonical form, or the multipart form as {name: (filename, bytes)}."""
        parameters = operation.get("parameters", [])
        body_parameter = next((p for p in parameters if p["in"] == "body"), None)
        if self.is_upload(operation):
            return self._read_form(operation, content_type, raw)
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
        if body is None:
            if body_parameter.get("required"):
                raise ApiError(INVALID_ARGUMENT, f"{operation['operationId']} needs a body")
            return None
        body = self.proto_json.read(body_parameter["schema"], body, "body")
        problems = self.errors(body_parameter["schema"], body)
        if problems:
            raise ApiError(INVALID_ARGUMENT, f"body does not match {body_parameter['schema']}: {'; '.join(problems)}")
        return body

    @staticmethod
    def _read_form(operation: dict, content_type: str, raw: bytes) -> dict:
        form = [p for p in operation.get("parameters", []) if p["in"] == "formData"]
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(INVALID_ARGUMENT, f"{operation['operationId']} takes multipart/form-data")
        parts = _multipart(content_type, raw)
        unknown = sorted(set(parts) - {p["name"] for p in form})
        if unknown:
            raise ApiError(INVALID_ARGUMENT, f"undeclared form field(s) {unknown}")
        for parameter in form:
            if parameter.get("required") and parameter["name"] not in parts:
                raise ApiError(INVALID_ARGUMENT, f"multipart form lacks {parameter['name']!r}")
            if parameter.get("type") == "file" and parameter["name"] in parts and not parts[parameter["name"]][0]:
                raise ApiError(INVALID_ARGUMENT, f"form field {parameter['name']!r} must be a file (no filename)")
        return parts

    def written(self, operation: dict, answer):
        return self.proto_json.written(operation["responses"]["200"]["schema"], answer)

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
    if not documents or not isinstance(documents[0], dict):
        raise ValueError("no pipeline spec in the file")
    if len(documents) > 1:
        platform = {}
        for doc in documents[1:]:
            platform.update(doc)
        return {"pipeline_spec": documents[0], "platform_spec": platform}
    return documents[0]


def _artifact_outputs(spec: dict) -> dict[str, dict[str, str]]:
    """Each container task's output artifacts (name -> KFP class, ``system.Model``, ...), in every DAG of the spec:
    the root's and the conditions'."""
    components = spec.get("components", {})
    dags = [spec.get("root", {}).get("dag", {})] + [c["dag"] for c in components.values() if "dag" in c]
    outputs = {}
    for dag in dags:
        for name, task in dag.get("tasks", {}).items():
            component = components.get(task.get("componentRef", {}).get("name", ""), {})
            if "dag" in component:
                continue  # a condition: its tasks are listed with its own DAG
            declared = component.get("outputDefinitions", {}).get("artifacts", {})
            outputs[name] = {output: d.get("artifactType", {}).get("schemaTitle", "") for output, d in declared.items()}
    return outputs


def _bare_spec(spec: dict) -> dict:
    return spec["pipeline_spec"] if "root" not in spec and "pipeline_spec" in spec else spec


class Predicates:
    """A canonical ``Filter`` applied to stored items, as KFP's list queries apply it."""

    COMPARE = {
        "EQUALS": lambda a, b: a == b,
        "NOT_EQUALS": lambda a, b: a != b,
        "GREATER_THAN": lambda a, b: a > b,
        "GREATER_THAN_EQUALS": lambda a, b: a >= b,
        "LESS_THAN": lambda a, b: a < b,
        "LESS_THAN_EQUALS": lambda a, b: a <= b,
        "IS_SUBSTRING": lambda a, b: b in a,
        "IN": lambda a, b: a in b,
    }

    @classmethod
    def apply(cls, items: list[dict], filter_: dict | None) -> list[dict]:
        for predicate in (filter_ or {}).get("predicates", []):
            operation = predicate.get("operation", "OPERATION_UNSPECIFIED")
            if operation not in cls.COMPARE:
                raise ApiError(INVALID_ARGUMENT, f"filter operation {operation} is not supported")
            wanted = cls._value(predicate)
            compare = cls.COMPARE[operation]
            items = [item for item in items if compare(cls._field(item, predicate["key"], wanted), wanted)]
        return items

    @staticmethod
    def _value(predicate: dict):
        for field in ("string_value", "int_value", "timestamp_value"):
            if field in predicate:
                return predicate[field]
        if "long_value" in predicate:
            return int(predicate["long_value"])
        for field in ("string_values", "int_values", "long_values"):
            if field in predicate:
                return predicate[field].get("values", [])
        raise ApiError(INVALID_ARGUMENT, f"filter predicate on {predicate.get('key')!r} has no value")

    @staticmethod
    def _field(item: dict, key: str, wanted):
        value = item.get(key, "")
        if isinstance(wanted, int) and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)  # an int64 field, stored as its canonical string
        return value


class FakeKfp:
    def __init__(
        self,
        token: str | None = None,
        namespaces: tuple[str, ...] | None = None,
        run_progress: tuple[str, ...] = ("PENDING", "RUNNING", "RUNNING"),
        pipeline_root: str | Path | None = None,
        task_artifacts: dict[tuple[str, str], bytes] | None = None,
    ):
        self.spec = Spec()
        self.pipeline_root = str(pipeline_root) if pipeline_root is not None else None
        self.task_artifacts = dict(task_artifacts or {})  # (task, output artifact) -> its file, on success
        self.cache_hits: set[str] = set()  # tasks new runs take from the cache when an earlier run computed them
        self.token = token
        self.namespaces = namespaces
        self.run_progress = run_progress  # the states each new run shows, one per GET, before its outcome
        self.outcome = "SUCCEEDED"  # what new runs end as: SUCCEEDED or FAILED
        self.fail_uploads = False  # UploadPipelineVersion answers 500, as on a full database
        self.requests: list[dict] = []  # every request: method, path, query, body (in canonical form)
        self.violations: list[str] = []  # requests that break the spec, answers that break it
        self.metadata = FakeMetadataStore(self.violations)  # ML Metadata, as the backend fills it
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
        if split.path.startswith(MLMD_PATH):
            self._metadata(handler, split.path, raw)
            return
        try:
            operation, path_params = self.spec.operation(handler.command, split.path)
            params = self.spec.read_query(operation, query)
            body = self.spec.read_body(operation, handler.headers.get("Content-Type", ""), raw)
            record["body"] = body
            if operation["operationId"] != "HealthzService_GetHealthz":  # the real health check takes no token
                self._authenticate(handler.headers.get("Authorization"))
            implementation = getattr(self, "_" + operation["operationId"], None)
            if implementation is None:
                self._send(handler, 501, {"code": 12, "message": f"{operation['operationId']} is not in the fake"})
                return
            with self._lock:
                answer = self.spec.written(operation, implementation(path_params, params, body))
            problems = self.spec.check_answer(operation, answer)
            if problems:
                self.violations.append(f"answer to {operation['operationId']} breaks the spec: {problems}")
            self._send(handler, 200, answer)
        except ApiError as error:
            if error.code == INVALID_ARGUMENT:
                self.violations.append(f"{handler.command} {handler.path}: {error.message}")
            self._send(handler, HTTP_STATUS[error.code], {"code": error.code, "message": error.message, "details": []})

    def _metadata(self, handler: BaseHTTPRequestHandler, path: str, raw: bytes) -> None:
        """The UI server's ``/ml_metadata.*`` proxy: the same credentials as the API, then ML Metadata's answer."""
        try:
            self._authenticate(handler.headers.get("Authorization"))
        except ApiError as error:
            self._send(handler, HTTP_STATUS[error.code], {"code": error.code, "message": error.message})
            return
        if handler.command != "POST":
            status, headers, body = 405, {"Content-Type": "text/plain"}, b"gRPC-Web calls are POSTs"
        else:
            status, headers, body = self.metadata.handle(path, handler.headers, raw)
        handler.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

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
        items = Predicates.apply(items, params.get("filter"))
        field, _, order = params.get("sort_by", "").partition(" ")
        if field:
            items = sorted(items, key=lambda item: item.get(field, ""), reverse=order == "desc")
        start = int(params.get("page_token") or 0)
        size = int(params.get("page_size") or 20)
        answer = {key: copy.deepcopy(items[start : start + size]), "total_size": len(items)}
        if start + size < len(items):
            answer["next_page_token"] = str(start + size)
        return answer

    # -- health ----------------------------------------------------------------------------
    def _HealthzService_GetHealthz(self, path, params, body):
        return {"multi_user": self.token is not None, "pipeline_store": "database"}

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
        return self._page(items, params, "pipelines")

    def _new_pipeline(self, name: str, display_name: str, description: str, namespace: str) -> dict:
        if not name:
            raise ApiError(INVALID_ARGUMENT, "pipeline name is required")
        self._namespace(namespace)
        for pipeline in self.pipelines.values():
            if pipeline["name"] == name and pipeline.get("namespace", "") == namespace:
                raise ApiError(ALREADY_EXISTS, f"pipeline {name} already exists")
        pipeline = {
            "pipeline_id": str(uuid.uuid4()),
            "name": name,
            "display_name": display_name or name,
            "description": description,
            "namespace": namespace,
            "created_at": self._now(),
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def _PipelineService_CreatePipeline(self, path, params, body):
        body = body or {}
        return self._new_pipeline(
            body.get("name", ""), body.get("display_name", ""), body.get("description", ""), body.get("namespace", "")
        )

    def _PipelineService_GetPipeline(self, path, params, body):
        return self._find(self.pipelines, path["pipeline_id"], "pipeline")

    def _PipelineService_DeletePipeline(self, path, params, body):
        self._find(self.pipelines, path["pipeline_id"], "pipeline")
        versions = [v for v in self.versions.values() if v["pipeline_id"] == path["pipeline_id"]]
        if versions and not params.get("cascade"):
            message = f"pipeline {path['pipeline_id']} has {len(versions)} version(s); delete them or pass cascade=true"
            raise ApiError(FAILED_PRECONDITION, message)
        for version in versions:
            del self.versions[version["pipeline_version_id"]]
        del self.pipelines[path["pipeline_id"]]
        return {}

    def _PipelineService_ListPipelineVersions(self, path, params, body):
        self._find(self.pipelines, path["pipeline_id"], "pipeline")
        items = [v for v in self.versions.values() if v["pipeline_id"] == path["pipeline_id"]]
        return self._page(items, params, "pipeline_versions")

    def _PipelineService_GetPipelineVersion(self, path, params, body):
        version = self._find(self.versions, path["pipeline_version_id"], "pipeline version")
        if version["pipeline_id"] != path["pipeline_id"]:
            raise ApiError(NOT_FOUND, "pipeline version not found in this pipeline")
        return version

    def _new_version(self, pipeline: dict, name: str, display_name: str, description: str, form: dict) -> dict:
        if any(v["name"] == name and v["pipeline_id"] == pipeline["pipeline_id"] for v in self.versions.values()):
            raise ApiError(ALREADY_EXISTS, f"pipeline version {name} already exists")
        try:
            spec = _spec_struct(form["uploadfile"][1].decode())
        except (yaml.YAMLError, UnicodeDecodeError, ValueError) as error:
            raise ApiError(INVALID_ARGUMENT, f"invalid pipeline spec: {error}") from None
        version = {
            "pipeline_id": pipeline["pipeline_id"],
            "pipeline_version_id": str(uuid.uuid4()),
            "name": name,
            "display_name": display_name or name,
            "description": description,
            "created_at": self._now(),
            "pipeline_spec": spec,
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    @staticmethod
    def _upload_name(params: dict, form: dict) -> str:
        """The server's buildPipelineName: the name, else the display name, else the file name."""
        return params.get("name") or params.get("display_name") or form["uploadfile"][0].rsplit(".", 1)[0]

    def _UploadPipeline(self, path, params, form):
        name = self._upload_name(params, form)
        pipeline = self._new_pipeline(
            name, params.get("display_name", ""), params.get("description", ""), params.get("namespace", "")
        )
        try:  # the pipeline and its first version, of the same name, are created together
            self._new_version(pipeline, pipeline["name"], pipeline["display_name"], pipeline["description"], form)
        except ApiError:
            del self.pipelines[pipeline["pipeline_id"]]
            raise
        return pipeline

    def _UploadPipelineVersion(self, path, params, form):
        if self.fail_uploads:
            raise ApiError(INTERNAL, "Failed to create a pipeline version")
        pipeline = self._find(self.pipelines, params.get("pipelineid", ""), "pipeline")
        self._namespace(pipeline.get("namespace"))
        name = self._upload_name(params, form)
        return self._new_version(pipeline, name, params.get("display_name", ""), params.get("description", ""), form)

    # -- experiments -----------------------------------------------------------------------
    def _ExperimentService_ListExperiments(self, path, params, body):
        namespace = params.get("namespace", "")
        self._namespace(namespace)
        items = [e for e in self.experiments.values() if e.get("namespace", "") == namespace]
        return self._page(items, params, "experiments")

    def _ExperimentService_GetExperiment(self, path, params, body):
        experiment = self._find(self.experiments, path["experiment_id"], "experiment")
        self._namespace(experiment.get("namespace"))
        return experiment

    def _ExperimentService_CreateExperiment(self, path, params, body):
        body = body or {}
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
        spec = _bare_spec(spec)
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
        body = body or {}
        if not body.get("display_name"):
            raise ApiError(INVALID_ARGUMENT, "run display_name is required")
        self._experiment_for(body)
        spec = self._check_pipeline_source(body)
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
        self._run_plans[run["run_id"]] = [*self.run_progress, self.outcome]
        run["_tasks"] = sorted(spec.get("root", {}).get("dag", {}).get("tasks", {}))
        run["_artifact_outputs"] = _artifact_outputs(spec)
        run["_pipeline_name"] = spec.get("pipelineInfo", {}).get("name", "")
        runtime_root = (body.get("runtime_config") or {}).get("pipeline_root")
        run["_pipeline_root"] = (
            runtime_root or spec.get("defaultPipelineRoot") or self.pipeline_root or DEFAULT_PIPELINE_ROOT
        )
        # The root DAG's driver makes the run's context in ML Metadata as the run starts.
        run["_context"] = self.metadata.record_run(run["run_id"], run["_pipeline_name"], str(run["_pipeline_root"]))
        run["_cached"] = set()
        return self._public(run)

    def _ran(self, run: dict) -> list[str]:
        """The container tasks a succeeded run ran: the root DAG's, and those in conditions that made outputs."""
        given = {task for task, _ in self.task_artifacts}
        return [task for task in run["_artifact_outputs"] if task in run["_tasks"] or task in given]

    def _record_tasks(self, run: dict) -> None:
        """What the backend leaves after a run succeeded: each task's execution and outputs in ML Metadata, and
        their files in the artifact store (a local pipeline root only); a cache hit reuses an earlier run's."""
        root = str(run["_pipeline_root"])
        for task in self._ran(run):
            earlier = self._computed_before(run, task) if task in self.cache_hits else None
            if earlier is not None:
                self.metadata.record_cached_task(run["_context"], task, earlier)
                run["_cached"].add(task)
                continue
            outputs = {}
            for output, schema_title in run["_artifact_outputs"][task].items():
                salt = str(uuid.uuid4())  # the driver's outputURISalt
                uri = f"{root.rstrip('/')}/{run['_pipeline_name']}/{run['run_id']}/{task}/{salt}/{output}"
                outputs[output] = RecordedOutput(uri, schema_title or "system.Artifact")
                content = self.task_artifacts.get((task, output))
                if content is None:
                    continue
                if "://" in root:
                    self.log.append(f"run {run['run_id']}: pipeline root {root} is not a local directory; no files")
                    continue
                path = Path(uri)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            self.metadata.record_task(run["_context"], task, outputs)

    def _computed_before(self, run: dict, task: str) -> int | None:
        """The execution of an earlier succeeded run of the same pipeline that computed ``task``: the cache entry."""
        for earlier in self.runs.values():
            if (
                earlier is run
                or earlier.get("state") != "SUCCEEDED"
                or earlier["_pipeline_name"] != run["_pipeline_name"]
            ):
                continue
            execution = self.metadata.execution_of(earlier["run_id"], task)
            if execution is not None:
                return execution.id
        return None

    @staticmethod
    def _public(run: dict) -> dict:
        return {key: value for key, value in run.items() if not key.startswith("_")}

    def _advance(self, run: dict) -> None:
        """The run's next planned state, with its history, task details and error."""
        plan = self._run_plans.get(run["run_id"], [])
        if not plan:
            return
        state = plan.pop(0)
        if state == run["state"]:
            return
        now = self._now()
        entry = {"update_time": now, "state": state}
        if state == "FAILED":
            entry["error"] = {"code": 2, "message": "task train failed: exit code 1"}
        if state == "SUCCEEDED":
            self._record_tasks(run)
        if state == "FAILED":
            self.metadata.record_failed_task(run["_context"], "train")  # the launcher publishes the failure
        if state in FINAL_STATES:
            run["finished_at"] = now
            run["run_details"] = {"task_details": self._task_details(run, state, now)}
        run["state"] = state
        run["state_history"].append(entry)

    def _task_details(self, run: dict, outcome: str, now: str) -> list[dict]:
        if outcome == "SUCCEEDED":
            return self._succeeded_nodes(run, now)
        details = []
        for task in run["_tasks"]:
            failed = outcome == "FAILED" and task == "train"
            detail = {
                "run_id": run["run_id"],
                "task_id": f"{task}-{run['run_id'][:8]}",
                "display_name": task,
                "create_time": run["created_at"],
                "start_time": run["created_at"],
                "end_time": now,
                "state": "FAILED" if failed else "SUCCEEDED" if outcome == "SUCCEEDED" else "SKIPPED",
            }
            if failed:
                detail["error"] = {"code": 2, "message": "CUDA out of memory"}
            details.append(detail)
        if outcome == "FAILED" and "train" not in run["_tasks"]:
            details.append(
                {
                    "run_id": run["run_id"],
                    "task_id": "train-1",
                    "display_name": "train",
                    "state": "FAILED",
                    "error": {"code": 2, "message": "CUDA out of memory"},
                }
            )
        return details

    def _succeeded_nodes(self, run: dict, now: str) -> list[dict]:
        """The Argo nodes of a succeeded run's container tasks, as KFP 2.17 reports them: no outputs, no execution
        id; a task taken from the cache succeeded, its executor pod skipped (argocompiler/container.go: the
        executor runs ``when: cached-decision != true``)."""
        workflow = f"{run['_pipeline_name']}-{run['run_id'][:5]}"
        details = []
        for index, task in enumerate(self._ran(run)):
            times = {"create_time": run["created_at"], "start_time": run["created_at"], "end_time": now}
            common = {"run_id": run["run_id"], **times}
            executor_node = f"{workflow}-{3 * index + 3}"
            details += [
                {
                    **common,
                    "task_id": f"{task}-driver-{run['run_id'][:8]}",
                    "display_name": f"{task}-driver",
                    "pod_name": f"{workflow}-system-container-driver-{3 * index + 1}",
                    "state": "SUCCEEDED",
                },
                {
                    **common,
                    "task_id": f"{task}-{run['run_id'][:8]}",
                    "display_name": task,
                    "pod_name": f"{workflow}-system-container-executor-{3 * index + 2}",
                    "state": "SUCCEEDED",
                    "child_tasks": [{"pod_name": executor_node}],
                },
                {
                    **common,
                    "task_id": f"{task}-executor-{run['run_id'][:8]}",
                    "display_name": "executor",
                    "pod_name": f"{workflow}-system-container-impl-{3 * index + 3}",
                    "state": "SKIPPED" if task in run["_cached"] else "SUCCEEDED",
                },
            ]
        return details

    def _RunService_GetRun(self, path, params, body):
        run = self._find(self.runs, path["run_id"], "run")
        self._advance(run)
        return self._public(run)

    def _RunService_ListRuns(self, path, params, body):
        namespace = params.get("namespace", "")
        self._namespace(namespace)
        items = [self._public(run) for run in self.runs.values()]
        if params.get("experiment_id"):
            items = [run for run in items if run.get("experiment_id") == params["experiment_id"]]
        else:
            in_namespace = {e for e, exp in self.experiments.items() if exp.get("namespace", "") == namespace}
            items = [run for run in items if run.get("experiment_id") in in_namespace]
        return self._page(items, params, "runs")

    def _RunService_TerminateRun(self, path, params, body):
        run = self._find(self.runs, path["run_id"], "run")
        if run["state"] not in FINAL_STATES:
            self._run_plans[run["run_id"]] = ["CANCELING", "CANCELING", "CANCELED"]
            self._advance(run)
        return {}

    # -- recurring runs --------------------------------------------------------------------
    def _RecurringRunService_CreateRecurringRun(self, path, params, body):
        body = body or {}
        for field in ("display_name", "trigger", "max_concurrency"):
            if not body.get(field):
                raise ApiError(INVALID_ARGUMENT, f"recurring run {field} is required")
        if not 1 <= int(body["max_concurrency"]) <= 10:
            raise ApiError(INVALID_ARGUMENT, "max_concurrency must be in [1, 10]")
        self._check_trigger(body["trigger"])
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

    @staticmethod
    def _check_trigger(trigger: dict) -> None:
        if len(trigger) != 1:
            raise ApiError(INVALID_ARGUMENT, "trigger needs exactly one of cron_schedule, periodic_schedule")
        if "cron_schedule" in trigger:
            schedule = trigger["cron_schedule"]
            cron = schedule.get("cron", "")
            if not cron.startswith("@") and len(cron.split()) != 6:
                raise ApiError(INVALID_ARGUMENT, f"cron {cron!r} must have 6 fields (seconds first)")
        else:
            schedule = trigger["periodic_schedule"]
            if int(schedule.get("interval_second", "0")) <= 0:
                raise ApiError(INVALID_ARGUMENT, "interval_second must be positive")
        start, end = schedule.get("start_time"), schedule.get("end_time")
        if start and end and _instant(end) <= _instant(start):
            raise ApiError(INVALID_ARGUMENT, f"end_time {end} is not after start_time {start}")

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


def _instant(timestamp: str) -> datetime:
    return datetime.fromisoformat(re.sub(r"\.\d+", "", timestamp).replace("Z", "+00:00"))
