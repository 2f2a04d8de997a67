"""A Kubeflow Model Registry REST server (API ``v1alpha3``) on 127.0.0.1, checked against the registry's own spec.

The spec is ``model_registry_openapi.yaml`` beside this file (kubeflow/model-registry's
``api/openapi/model-registry.yaml``, source commit in its header). Both ways, as the real server:

- a request's path and method must be declared (else 404 / 405), its query parameters declared and valid
  against their schema (the real server ignores undeclared ones: here they are a client bug, refused), its
  body JSON valid against the declared schema, with no field the schema does not declare at any depth (the
  real server decodes with ``DisallowUnknownFields``; a ``oneOf`` is chosen by its discriminator);
- every answer is checked against the documented response schema, with no undeclared field.

A refused request gets the server's error shape (``{"code": "Bad Request", "message": ...}``) and is kept in
:attr:`FakeModelRegistry.violations`, so a test fails loudly on any call the real server would refuse.

State is kept as the real server keeps it (``internal/core``): ids are decimal strings, from one sequence per
kind of MLMD record (contexts: registered models, versions, serving environments, inference services;
artifacts; executions: serve actions); names are unique among registered models and serving environments,
and per parent for versions (per registered model), inference services (per environment), artifacts (per
version) and serve actions (per inference service), a duplicate answering 409; states default as the
spec's enums say (``LIVE``, ``DEPLOYED``, ``UNKNOWN``); times are milliseconds since the epoch as strings;
``find`` endpoints want a name and parent id, or an external id; ``GET /inference_services/{id}/version`` is
the version the service names or else the registered model's newest; ``PATCH`` replaces the fields it
carries, except those the server never edits (id, name, parent ids, times). List endpoints page by
``pageSize`` and ``nextPageToken`` ordered by ``orderBy``/``sortOrder``. ``filterQuery`` is not implemented:
a request with one is recorded as a violation (the library does not send any).

With ``token`` set it wants ``Authorization: Bearer <token>`` and answers 401 otherwise.
``echo_authorization`` (a hostile server, for the credential tests) quotes the Authorization header it got
in its error messages.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator

SPEC_PATH = Path(__file__).with_name("model_registry_openapi.yaml")
PREFIX = "/api/model_registry/v1alpha3"
STATUS_TEXT = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
STATUS_TEXT |= {409: "Conflict", 422: "Unprocessable Entity", 500: "Internal Server Error", 501: "Not Implemented"}
# The entity kinds the fake keeps: collection path -> (schema, MLMD record kind, parent field, default state).
KINDS = {
    "registered_models": ("RegisteredModel", "context", None, ("state", "LIVE")),
    "model_versions": ("ModelVersion", "context", "registeredModelId", ("state", "LIVE")),
    "serving_environments": ("ServingEnvironment", "context", None, None),
    "inference_services": ("InferenceService", "context", "servingEnvironmentId", ("desiredState", "DEPLOYED")),
    "model_artifacts": ("ModelArtifact", "artifact", "modelVersionId", ("state", "UNKNOWN")),
    "serves": ("ServeModel", "execution", "inferenceServiceId", ("lastKnownState", "UNKNOWN")),
}
SINGULAR = {
    "registered_model": "registered_models",
    "model_version": "model_versions",
    "serving_environment": "serving_environments",
    "inference_service": "inference_services",
    "model_artifact": "model_artifacts",
}
# Fields PATCH never changes (the server's reconciler ignores them).
NOT_EDITABLE = {"id", "name", "createTimeSinceEpoch", "lastUpdateTimeSinceEpoch", "registeredModelId"}
NOT_EDITABLE |= {"servingEnvironmentId", "artifactType"}
# Where the real server answers with a status its spec does not declare (its handler, not the spec, decides):
# CreateInferenceService answers 201 Created, the spec says 200, and the generated Python client then
# deserializes nothing (returns None). The fake answers as the server does and does not count it.
SERVER_STATUS = {("post", "/inference_services"): 201}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Spec:
    """The OpenAPI document: routes, parameters, schemas and the checks of bodies against them."""

    def __init__(self, path: Path = SPEC_PATH):
        self.document = yaml.safe_load(path.read_text())
        self.components = self.document["components"]
        self.routes = []
        for template, item in self.document["paths"].items():
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
            self.routes.append((re.compile(f"^{pattern}$"), template, item))

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            kind, name = schema["$ref"].split("/")[-2:]
            schema = self.components[kind][name]
        return schema

    def route(self, path: str, method: str):
        for pattern, template, item in self.routes:
            match = pattern.match(path)
            if match:
                if method not in item:
                    allowed = ", ".join(m.upper() for m in item if m in ("get", "post", "patch", "put", "delete"))
                    raise ApiError(405, f"{method.upper()} {template} is not declared (allowed: {allowed})")
                return template, item, item[method], match.groupdict()
        raise ApiError(404, f"{path} is not a path of the Model Registry API")

    def parameters(self, item: dict, operation: dict) -> dict[str, dict]:
        declared = {}
        for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
            parameter = self.resolve(parameter)
            declared[(parameter["in"], parameter["name"])] = parameter
        return declared

    def validate(self, schema: dict, value, where: str) -> None:
        """``value`` against ``schema``: JSON Schema (OpenAPI 3.0) and no undeclared field at any depth."""
        root = {**schema, "components": self.components}
        try:
            OAS30Validator(root).validate(value)
        except ValidationError as error:
            path = "".join(f"[{step!r}]" for step in error.absolute_path)
            raise ApiError(400, f"{where}{path}: {error.message}") from None
        self.undeclared(schema, value, where)

    def properties(self, schema: dict) -> tuple[dict, object]:
        """The properties an object schema declares (through ``allOf``), and its ``additionalProperties``."""
        schema = self.resolve(schema)
        properties, extra = dict(schema.get("properties", {})), schema.get("additionalProperties")
        for part in schema.get("allOf", []):
            more, more_extra = self.properties(part)
            properties.update(more)
            extra = extra if extra is not None else more_extra
        return properties, extra

    def undeclared(self, schema: dict, value, where: str) -> None:
        schema = self.resolve(schema)
        if "oneOf" in schema and isinstance(value, dict):
            discriminator = schema.get("discriminator", {})
            chosen = discriminator.get("mapping", {}).get(value.get(discriminator.get("propertyName", "")))
            if chosen is None:
                raise ApiError(400, f"{where}: no {discriminator.get('propertyName')} names one of the oneOf schemas")
            return self.undeclared({"$ref": chosen}, value, where)
        if isinstance(value, list):
            items = schema.get("items")
            for index, item in enumerate(value):
                if items:
                    self.undeclared(items, item, f"{where}[{index}]")
            return
        if not isinstance(value, dict):
            return
        properties, extra = self.properties(schema)
        for key, item in value.items():
            if key in properties:
                self.undeclared(properties[key], item, f"{where}.{key}")
            elif isinstance(extra, dict):
                self.undeclared(extra, item, f"{where}[{key!r}]")
            elif extra is not True:
                raise ApiError(400, f'{where}: json: unknown field "{key}"')


class FakeModelRegistry:
    def __init__(self, token: str = "", echo_authorization: bool = False):
        self.spec = Spec()
        self.token = token
        self.echo_authorization = echo_authorization
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.entities: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self._ids = {"context": itertools.count(1), "artifact": itertools.count(1), "execution": itertools.count(1)}
        self._lock = threading.Lock()
        self._clock = 0

    # --- server -------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeModelRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method: str):
                status, body = registry.handle(method, self.path, self.headers, self._body())
                payload = json.dumps(body).encode() + b"\n"
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self):
                self._serve("get")

            def do_POST(self):
                self._serve("post")

            def do_PATCH(self):
                self._serve("patch")

            def do_PUT(self):
                self._serve("put")

            def do_DELETE(self):
                self._serve("delete")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # --- requests -----------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers, raw_body: bytes) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        self.requests.append((method.upper(), parts.path))
        try:
            if self.token and headers.get("Authorization") != f"Bearer {self.token}":
                quoted = f" (got {headers.get('Authorization')!r})" if self.echo_authorization else ""
                return self._error(401, f"a bearer token is required{quoted}", record=False)
            template, item, operation, path_values = self.spec.route(parts.path, method)
            declared = self.spec.parameters(item, operation)
            for name, value in path_values.items():
                self.spec.validate(declared[("path", name)]["schema"], value, f"path parameter {name}")
            query = self._query(parts.query, declared)
            body = self._request_body(operation, raw_body, method)
            with self._lock:
                status, answer = self._dispatch(method, template, path_values, query, body)
            self._check_answer(operation, method, template, status, answer)
            return status, answer
        except ApiError as error:
            return self._error(error.status, error.message, record=error.status in (400, 405, 422, 501))

    def _error(self, status: int, message: str, record: bool) -> tuple[int, dict]:
        if record:
            self.violations.append(f"{status}: {message}")
        return status, {"code": STATUS_TEXT.get(status, str(status)), "message": message}

    def _query(self, raw: str, declared: dict) -> dict[str, str]:
        values = {}
        for name, items in parse_qs(raw, keep_blank_values=True).items():
            parameter = declared.get(("query", name))
            if parameter is None:
                allowed = sorted(key for where, key in declared if where == "query")
                raise ApiError(400, f"query parameter {name!r} is not declared here (declared: {allowed})")
            if len(items) > 1:
                raise ApiError(400, f"query parameter {name!r} given {len(items)} times")
            self.spec.validate(parameter["schema"], items[0], f"query parameter {name}")
            values[name] = items[0]
        if "filterQuery" in values and values["filterQuery"]:
            raise ApiError(501, "filterQuery is not implemented by this fake")
        return values

    def _request_body(self, operation: dict, raw: bytes, method: str):
        declared = operation.get("requestBody")
        if declared is None:
            if raw.strip():
                raise ApiError(400, f"{method.upper()} takes no body")
            return None
        if not raw.strip():
            raise ApiError(400, "EOF: a JSON body is required")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ApiError(400, f"invalid JSON body: {error}") from None
        self.spec.validate(declared["content"]["application/json"]["schema"], body, "body")
        return body

    def _check_answer(self, operation: dict, method: str, template: str, status: int, answer) -> None:
        where = f"{method.upper()} {template}"
        response = operation["responses"].get(str(status))
        if response is None and SERVER_STATUS.get((method, template[len(PREFIX) :])) == status:
            response = operation["responses"].get("200")
        if response is None:
            self.violations.append(f"answer: {where} answered {status}, which the spec does not declare")
            return
        response = self.spec.resolve(response)
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return
        try:
            self.spec.validate(schema, answer, f"answer of {where}")
        except ApiError as error:
            self.violations.append(f"answer: {error.message}")

    # --- the API --------------------------------------------------------------------------------------------

    def _dispatch(self, method: str, template: str, path_values: dict, query: dict, body):
        segments = template[len(PREFIX) + 1 :].split("/")
        ids = list(path_values.values())
        head = segments[0]
        if head in SINGULAR and method == "get":
            return 200, self._find(SINGULAR[head], query)
        if head in ("experiments", "experiment", "experiment_runs", "experiment_run", "artifacts", "artifact"):
            raise ApiError(501, f"{template} is not implemented by this fake")
        if len(segments) == 1:
            if method == "post":
                return 201, self._create(head, body)
            return 200, self._list(head, query, lambda entity: True)
        if len(segments) == 2:
            if method == "get":
                return 200, self._get(head, ids[0])
            return 200, self._update(head, ids[0], body)
        child = segments[2]
        parent = self._get(head, ids[0])
        if (head, child) == ("registered_models", "versions"):
            if method == "post":
                return 201, self._create("model_versions", {**body, "registeredModelId": parent["id"]})
            return 200, self._list("model_versions", query, lambda e: e["registeredModelId"] == parent["id"])
        if (head, child) == ("serving_environments", "inference_services"):
            if method == "post":
                return 201, self._create("inference_services", {**body, "servingEnvironmentId": parent["id"]})
            return 200, self._list("inference_services", query, lambda e: e["servingEnvironmentId"] == parent["id"])
        if (head, child) == ("inference_services", "serves"):
            if method == "post":
                return 201, self._create("serves", {**body, "inferenceServiceId": parent["id"]})
            return 200, self._list("serves", query, lambda e: e["inferenceServiceId"] == parent["id"])
        if (head, child) == ("inference_services", "version"):
            return 200, self._served_version(parent)
        if (head, child) == ("inference_services", "model"):
            return 200, self._get("registered_models", parent["registeredModelId"])
        if (head, child) == ("model_versions", "artifacts"):
            if method == "post":
                return self._upsert_version_artifact(parent, body)
            return 200, self._list(
                "model_artifacts", query, lambda e: e["modelVersionId"] == parent["id"], artifacts=True
            )
        raise ApiError(501, f"{template} is not implemented by this fake")

    def _now(self) -> str:
        self._clock = max(self._clock + 1, int(time.time() * 1000))
        return str(self._clock)

    def _get(self, kind: str, entity_id: str) -> dict:
        entity = self.entities[kind].get(entity_id)
        if entity is None:
            raise ApiError(404, f"no {KINDS[kind][0]} found for id {entity_id}")
        return self._public(kind, entity)

    def _public(self, kind: str, entity: dict) -> dict:
        """The entity as the API shows it: without the parent link the fake keeps for artifacts and serves."""
        internal = {"model_artifacts": "modelVersionId", "serves": "inferenceServiceId"}.get(kind)
        return {key: value for key, value in copy.deepcopy(entity).items() if key != internal}

    def _create(self, kind: str, body: dict) -> dict:
        schema, record, parent_field, default = KINDS[kind]
        entity = {key: value for key, value in copy.deepcopy(body).items() if key not in ("id",)}
        if parent_field and kind != "model_artifacts":
            parents = {
                "registeredModelId": "registered_models",
                "servingEnvironmentId": "serving_environments",
                "inferenceServiceId": "inference_services",
            }
            if entity.get(parent_field) not in self.entities[parents[parent_field]]:
                raise ApiError(404, f"no {parents[parent_field]} found for id {entity.get(parent_field)}")
        name = entity.get("name")
        if kind in ("serves",) and not name:
            name = entity["name"] = f"serve-{len(self.entities[kind]) + 1}"
        if name is not None:
            for other in self.entities[kind].values():
                same_parent = not parent_field or other.get(parent_field) == entity.get(parent_field)
                if other.get("name") == name and same_parent:
                    raise ApiError(409, f"{schema} with name {name} already exists")
        if default:
            entity.setdefault(*default)
        entity["id"] = str(next(self._ids[record]))
        entity["createTimeSinceEpoch"] = entity["lastUpdateTimeSinceEpoch"] = self._now()
        entity.setdefault("customProperties", {})
        self.entities[kind][entity["id"]] = entity
        return self._public(kind, entity)

    def _update(self, kind: str, entity_id: str, body: dict) -> dict:
        entity = self.entities[kind].get(entity_id)
        if entity is None:
            raise ApiError(404, f"no {KINDS[kind][0]} found for id {entity_id}")
        for key, value in body.items():
            if key not in NOT_EDITABLE:
                entity[key] = copy.deepcopy(value)
        entity["lastUpdateTimeSinceEpoch"] = self._now()
        return self._public(kind, entity)

    def _find(self, kind: str, query: dict) -> dict:
        name, external, parent = query.get("name"), query.get("externalId"), query.get("parentResourceId")
        parent_field = KINDS[kind][2]
        if external:
            matches = [e for e in self.entities[kind].values() if e.get("externalId") == external]
        elif name and (parent or not parent_field):
            matches = [
                e
                for e in self.entities[kind].values()
                if e.get("name") == name and (not parent_field or e.get(parent_field) == parent)
            ]
        else:
            needs = "(name and parentResourceId)" if parent_field else "name"
            raise ApiError(400, f"invalid parameters call, supply either {needs}, or externalId")
        if len(matches) != 1:
            found = "multiple" if matches else "no"
            raise ApiError(404, f"{found} {KINDS[kind][0]} found for name={name}, parentResourceId={parent}")
        return self._public(kind, matches[0])

    def _list(self, kind: str, query: dict, keep, artifacts: bool = False) -> dict:
        order = {"ID": "id", "CREATE_TIME": "createTimeSinceEpoch", "LAST_UPDATE_TIME": "lastUpdateTimeSinceEpoch"}
        key = order[query.get("orderBy") or "ID"]
        descending = query.get("sortOrder") == "DESC"
        items = sorted(
            (e for e in self.entities[kind].values() if keep(e)), key=lambda e: int(e[key]), reverse=descending
        )
        start = int(query.get("nextPageToken") or 0) if (query.get("nextPageToken") or "0").isdigit() else None
        if start is None:
            raise ApiError(400, f"invalid nextPageToken {query.get('nextPageToken')!r}")
        size = int(query.get("pageSize") or 0) or len(items) or 1
        page = items[start : start + size]
        next_token = str(start + size) if start + size < len(items) else ""
        answer = [self._public(kind, e) for e in page]
        if artifacts:
            answer = [{**item, "artifactType": "model-artifact"} for item in answer]
        return {"items": answer, "nextPageToken": next_token, "pageSize": size, "size": len(page)}

    def _served_version(self, service: dict) -> dict:
        if service.get("modelVersionId"):
            return self._get("model_versions", service["modelVersionId"])
        model = service["registeredModelId"]
        versions = [v for v in self.entities["model_versions"].values() if v["registeredModelId"] == model]
        if not versions:
            raise ApiError(404, f"no model version found for inference service {service['id']}")
        return self._public("model_versions", max(versions, key=lambda v: int(v["createTimeSinceEpoch"])))

    def _upsert_version_artifact(self, version: dict, body: dict) -> tuple[int, dict]:
        if body.get("artifactType") != "model-artifact":
            raise ApiError(501, f"artifactType {body.get('artifactType')!r} is not implemented by this fake")
        if body.get("id"):
            artifact = self._update("model_artifacts", body["id"], body)
            return 200, {**artifact, "artifactType": "model-artifact"}
        artifact = self._create("model_artifacts", {**body, "modelVersionId": version["id"]})
        return 201, artifact

    def model_artifacts_of(self, version_id: str) -> list[dict]:
        artifacts = self.entities["model_artifacts"].values()
        return [self._public("model_artifacts", a) for a in artifacts if a["modelVersionId"] == version_id]
