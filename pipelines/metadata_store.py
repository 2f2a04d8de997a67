"""ML Metadata, read as the Kubeflow Pipelines UI reads it: gRPC-Web at ``/ml_metadata.MetadataStoreService/``.

KFP records every task of a run in ML Metadata (MLMD), not in its REST API: the driver makes an execution
per task in the run's context (type ``system.PipelineRun``, named after the run's id), and links its output
artifacts (URI and metadata) to it by OUTPUT events named after the outputs. A task taken from KFP's cache
gets an execution of its own in this run, state CACHED, linked to the artifacts of the run that computed
them (``backend/src/v2/driver/cache.go``, ``reuseCachedOutputs``). The REST API's ``task_details`` come from
the Argo workflow's nodes and carry neither (KFP 2.17: no ``outputs``, no ``execution_id``).

The UI asks MLMD through its own server, which proxies ``/ml_metadata.*`` to MLMD's Envoy: so whatever host
serves the UI (a ``kubectl port-forward`` of ``ml-pipeline-ui``, the Kubeflow gateway) serves MLMD too, at
the root of its origin, with the same credentials. Inside the cluster, where ``kfp.Client()`` talks to the
API server itself, MLMD's Envoy is ``http://metadata-envoy-service.kubeflow:9090``.

The Python package ``ml-metadata`` pins protobuf < 5 and cannot be installed beside kfp 2.17, so the few
messages read here are declared below with the field numbers of ``ml_metadata/proto/metadata_store.proto``
and ``metadata_store_service.proto`` (ml-metadata 1.14.0, the copy KFP 2.17 builds against); unknown fields in
an answer are skipped, as protobuf does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

SERVICE = "ml_metadata.MetadataStoreService"
CONTENT_TYPE = "application/grpc-web+proto"
IN_CLUSTER_ENVOY = "http://metadata-envoy-service.kubeflow:9090"
# google.rpc.Code names, for messages.
GRPC_CODES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND"}
GRPC_CODES |= {7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 12: "UNIMPLEMENTED", 13: "INTERNAL"}
GRPC_CODES |= {14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}


class MetadataStoreError(RuntimeError):
    """ML Metadata could not be reached or refused a call; the message says where and what to do."""


# -- the messages read, with ml-metadata's own names and field numbers -------------------------------------------
_OPTIONAL, _REPEATED = (
    descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
)
_TYPES = {
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
}
_PROPERTIES = "map<string, Value>"
# message -> [(field, number, type, repeated, oneof)]; a type that is not a scalar names a message or enum.
_MESSAGES: dict[str, list[tuple]] = {
    "Value": [
        ("int_value", 1, "int64", False, "value"),
        ("double_value", 2, "double", False, "value"),
        ("string_value", 3, "string", False, "value"),
        ("struct_value", 4, ".google.protobuf.Struct", False, "value"),
        ("proto_value", 5, ".google.protobuf.Any", False, "value"),
        ("bool_value", 6, "bool", False, "value"),
    ],
    "Artifact": [
        ("id", 1, "int64"),
        ("type_id", 2, "int64"),
        ("uri", 3, "string"),
        ("properties", 4, _PROPERTIES),
        ("custom_properties", 5, _PROPERTIES),
        ("state", 6, ".ml_metadata.Artifact.State"),
        ("name", 7, "string"),
        ("type", 8, "string"),
        ("create_time_since_epoch", 9, "int64"),
        ("last_update_time_since_epoch", 10, "int64"),
        ("external_id", 11, "string"),
    ],
    "Execution": [
        ("id", 1, "int64"),
        ("type_id", 2, "int64"),
        ("last_known_state", 3, ".ml_metadata.Execution.State"),
        ("properties", 4, _PROPERTIES),
        ("custom_properties", 5, _PROPERTIES),
        ("name", 6, "string"),
        ("type", 7, "string"),
        ("create_time_since_epoch", 8, "int64"),
        ("last_update_time_since_epoch", 9, "int64"),
        ("external_id", 10, "string"),
    ],
    "Context": [
        ("id", 1, "int64"),
        ("type_id", 2, "int64"),
        ("name", 3, "string"),
        ("properties", 4, _PROPERTIES),
        ("custom_properties", 5, _PROPERTIES),
        ("type", 6, "string"),
        ("create_time_since_epoch", 7, "int64"),
        ("last_update_time_since_epoch", 8, "int64"),
        ("external_id", 9, "string"),
    ],
    "Event": [
        ("artifact_id", 1, "int64"),
        ("execution_id", 2, "int64"),
        ("path", 3, ".ml_metadata.Event.Path"),
        ("type", 4, ".ml_metadata.Event.Type"),
        ("milliseconds_since_epoch", 5, "int64"),
    ],
    "Event.Path": [("steps", 1, ".ml_metadata.Event.Path.Step", True)],
    "Event.Path.Step": [("index", 1, "int64", False, "value"), ("key", 2, "string", False, "value")],
    "ListOperationOptions": [
        ("max_result_size", 1, "int32"),
        ("next_page_token", 3, "string"),
        ("filter_query", 4, "string"),
    ],
    "GetContextByTypeAndNameRequest": [
        ("type_name", 1, "string"),
        ("context_name", 2, "string"),
        ("type_version", 3, "string"),
    ],
    "GetContextByTypeAndNameResponse": [("context", 1, ".ml_metadata.Context")],
    "GetExecutionsByContextRequest": [
        ("context_id", 1, "int64"),
        ("options", 2, ".ml_metadata.ListOperationOptions"),
    ],
    "GetExecutionsByContextResponse": [
        ("executions", 1, ".ml_metadata.Execution", True),
        ("next_page_token", 2, "string"),
    ],
    "GetEventsByExecutionIDsRequest": [("execution_ids", 1, "int64", True)],
    "GetEventsByExecutionIDsResponse": [("events", 1, ".ml_metadata.Event", True)],
    "GetArtifactsByIDRequest": [("artifact_ids", 1, "int64", True)],
    "GetArtifactsByIDResponse": [("artifacts", 1, ".ml_metadata.Artifact", True)],
}
_ENUMS = {
    "Artifact.State": ["UNKNOWN", "PENDING", "LIVE", "MARKED_FOR_DELETION", "DELETED", "ABANDONED", "REFERENCE"],
    "Execution.State": ["UNKNOWN", "NEW", "RUNNING", "COMPLETE", "FAILED", "CACHED", "CANCELED"],
    "Event.Type": [
        "UNKNOWN",
        "DECLARED_OUTPUT",
        "DECLARED_INPUT",
        "INPUT",
        "OUTPUT",
        "INTERNAL_INPUT",
        "INTERNAL_OUTPUT",
        "PENDING_OUTPUT",
    ],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="kfp_torch_lifecycle/ml_metadata_read.proto",
        package="ml_metadata",
        syntax="proto2",
        dependency=["google/protobuf/struct.proto", "google/protobuf/any.proto"],
    )
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for path in sorted(_MESSAGES, key=lambda name: name.count(".")):  # parents before nested messages
        parent, _, name = path.rpartition(".")
        container = messages[parent].nested_type if parent else file.message_type
        messages[path] = container.add(name=name)
    for path, names in _ENUMS.items():
        parent, _, name = path.rpartition(".")
        enum = messages[parent].enum_type.add(name=name)
        for number, value in enumerate(names):
            enum.value.add(name=value, number=number)
    for path, fields in _MESSAGES.items():
        message = messages[path]
        for name, number, kind, *rest in fields:
            repeated, oneof = (rest + [False, None])[:2]
            added = message.field.add(name=name, number=number, label=_REPEATED if repeated else _OPTIONAL)
            if kind == _PROPERTIES:  # a map field: a repeated entry message of key and value
                entry = message.nested_type.add(name="".join(part.title() for part in name.split("_")) + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=_OPTIONAL, type=_TYPES["string"])
                entry.field.add(name="value", number=2, label=_OPTIONAL, type_name=".ml_metadata.Value")
                entry.field[1].type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                added.label = _REPEATED
                added.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                added.type_name = f".ml_metadata.{path}.{entry.name}"
            elif kind in _TYPES:
                added.type = _TYPES[kind]
            else:
                added.type_name = kind
                is_enum = kind.removeprefix(".ml_metadata.") in _ENUMS
                added.type = (
                    descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
                    if is_enum
                    else descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                )
            if oneof:
                names = [item.name for item in message.oneof_decl]
                if oneof not in names:
                    message.oneof_decl.add(name=oneof)
                    names.append(oneof)
                added.oneof_index = names.index(oneof)
    return file


def _message_classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    for known in (struct_pb2, any_pb2):
        pool.AddSerializedFile(known.DESCRIPTOR.serialized_pb)
    pool.Add(_file_descriptor())
    return {
        path: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ml_metadata.{path}")) for path in _MESSAGES
    }


MESSAGES = _message_classes()


def value_of(value) -> Any:
    """An ``ml_metadata.Value`` as Python: int, float, str, bool, or the JSON of a Struct."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "struct_value":
        return MessageToDict(value.struct_value)
    if kind == "proto_value":
        return MessageToDict(value.proto_value)
    return getattr(value, kind)


def properties_of(properties: Mapping) -> dict[str, Any]:
    return {name: value_of(value) for name, value in sorted(properties.items())}


# -- the calls ------------------------------------------------------------------------------------------------
@dataclass
class MetadataStore:
    """The four MLMD calls a run's outputs take, over gRPC-Web at ``address`` (see the module docstring).

    ``headers`` gives the HTTP headers of each call (the KFP client's credentials, read afresh each time);
    ``http`` is the urllib3 pool to send them with (the KFP client's own, with its TLS settings)."""

    address: str
    headers: Callable[[], dict[str, str]] = dict
    http: urllib3.PoolManager = field(default_factory=urllib3.PoolManager)
    timeout: float = 30.0

    def call(self, method: str, request):
        """Send ``request`` (a message of :data:`MESSAGES`) to ``method``; its answer, or MetadataStoreError."""
        payload = request.SerializeToString()
        url = f"{self.address.rstrip('/')}/{SERVICE}/{method}"
        headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE, "X-Grpc-Web": "1", **self.headers()}
        try:
            answer = self.http.request(
                "POST",
                url,
                body=struct.pack(">BI", 0, len(payload)) + payload,
                headers=headers,
                timeout=self.timeout,
                redirect=False,
                retries=urllib3.Retry(total=3, connect=3, read=0, status=0, backoff_factor=0.5, redirect=0),
            )
        except urllib3.exceptions.HTTPError as error:
            raise MetadataStoreError(f"cannot reach ML Metadata at {self.address} ({_reason(error)})") from None
        if answer.status != 200:
            raise MetadataStoreError(self._http_error(answer.status))
        frames, trailers = _frames(answer.data, self.address)
        status = answer.headers.get("grpc-status") or trailers.get("grpc-status") or "0"
        if status != "0":
            message = unquote(answer.headers.get("grpc-message") or trailers.get("grpc-message") or "")
            code = GRPC_CODES.get(int(status), status) if status.isdigit() else status
            raise MetadataStoreError(f"ML Metadata at {self.address} refused {method}: {code}: {message}")
        response = MESSAGES[f"{method}Response"]()
        try:
            response.ParseFromString(b"".join(frames))
        except DecodeError:
            raise MetadataStoreError(f"ML Metadata at {self.address} answered {method} with no message") from None
        return response

    def _http_error(self, status: int) -> str:
        where = f"ML Metadata at {self.address}/{SERVICE}/"
        if status in (401, 403):
            return f"{where} answered HTTP {status}: give a token that may read the run (--token-file, KFP_TOKEN)"
        if status == 404:
            return (
                f"{where} answered HTTP 404: this address serves no ML Metadata. Use the address of the Kubeflow "
                f"Pipelines UI (which proxies /ml_metadata), or inside the cluster MLMD's Envoy, {IN_CLUSTER_ENVOY} "
                "(KFP_MLMD_HOST)"
            )
        if status in (301, 302, 303, 307, 308):
            return f"{where} answered HTTP {status} (a login page?): give a token (--token-file, KFP_TOKEN)"
        return f"{where} answered HTTP {status}"

    # The calls the Kubeflow UI makes for a run (frontend/src/mlmd/MlmdUtils.ts), in the same order.
    def run_context(self, run_id: str):
        request = MESSAGES["GetContextByTypeAndNameRequest"](type_name="system.PipelineRun", context_name=run_id)
        answer = self.call("GetContextByTypeAndName", request)
        return answer.context if answer.HasField("context") else None

    def executions(self, context_id: int) -> list:
        found, token = [], ""
        while True:
            request = MESSAGES["GetExecutionsByContextRequest"](context_id=context_id)
            if token:
                request.options.next_page_token = token
            answer = self.call("GetExecutionsByContext", request)
            found += list(answer.executions)
            token = answer.next_page_token
            if not token:
                return found

    def events(self, execution_ids: list[int]) -> list:
        request = MESSAGES["GetEventsByExecutionIDsRequest"](execution_ids=execution_ids)
        return list(self.call("GetEventsByExecutionIDs", request).events)

    def artifacts(self, artifact_ids: list[int]) -> list:
        if not artifact_ids:
            return []
        request = MESSAGES["GetArtifactsByIDRequest"](artifact_ids=artifact_ids)
        return list(self.call("GetArtifactsByID", request).artifacts)


def _frames(body: bytes, address: str) -> tuple[list[bytes], dict[str, str]]:
    """A gRPC-Web body's data frames and its trailers."""
    frames, trailers, offset = [], {}, 0
    while offset < len(body):
        if offset + 5 > len(body):
            raise MetadataStoreError(f"ML Metadata at {address} answered a cut gRPC-Web frame")
        kind, length = struct.unpack(">BI", body[offset : offset + 5])
        chunk = body[offset + 5 : offset + 5 + length]
        if len(chunk) != length:
            raise MetadataStoreError(f"ML Metadata at {address} answered a cut gRPC-Web frame")
        if kind & 0x80:
            for line in chunk.decode("utf-8", "replace").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip():
                    trailers[name.strip().lower()] = value.strip()
        else:
            frames.append(chunk)
        offset += 5 + length
    return frames, trailers


def _reason(error: Exception) -> str:
    cause = getattr(error, "reason", None) or error
    return str(cause).rsplit(": ", 1)[-1] or type(cause).__name__


def metadata_address(kfp_host: str, override: str | None = None) -> str:
    """Where MLMD answers: ``override`` (KFP_MLMD_HOST), else the origin of the KFP host, as the UI finds it."""
    if override:
        address = override.strip().rstrip("/")
        if "://" not in address:
            address = "http://" + address
    else:
        parts = urlsplit(kfp_host if "://" in kfp_host else f"http://{kfp_host}")
        address = f"{parts.scheme}://{parts.netloc}"
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise MetadataStoreError(f"ML Metadata's address must be an http(s) URL without credentials, got {address!r}")
    return address


def for_client(client, override: str | None = None) -> MetadataStore:
    """The MetadataStore a ``kfp.Client`` reaches: its host's origin (or ``override``), its credentials, cookies
    and TLS settings."""
    api_client = client.runs.api_client
    configuration = api_client.configuration

    def headers() -> dict[str, str]:
        sent = dict(api_client.default_headers)
        sent.pop("User-Agent", None)
        if api_client.cookie:
            sent["Cookie"] = api_client.cookie
        for setting in configuration.auth_settings().values():  # calls the credentials' refresh hook
            if setting["in"] == "header" and setting["value"]:
                sent[setting["key"]] = setting["value"]
        return sent

    return MetadataStore(metadata_address(configuration.host, override), headers, api_client.rest_client.pool_manager)
