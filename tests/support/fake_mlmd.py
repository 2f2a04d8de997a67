"""ML Metadata as Kubeflow Pipelines 2.17 fills it, served over gRPC-Web as the KFP UI server proxies it.

The messages are ML Metadata's own: ``tests/support/ml_metadata/proto/`` (ml-metadata 1.14.0, KFP 2.17's copy),
compiled with ``protoc`` on import. A request is parsed with the method's real request message; a field
number or wire type the real message does not declare (an unknown field) is refused with INVALID_ARGUMENT
and lands in :attr:`FakeMetadataStore.violations`, so a client that encodes a field wrongly fails a test.
Only the read calls a run's outputs take are served (the Kubeflow UI's: ``GetContextByTypeAndName``,
``GetExecutionsByContext``, ``GetEventsByExecutionIDs``, ``GetArtifactsByID``); another method of the
service answers UNIMPLEMENTED, a method the service lacks 404 (as the proxy's upstream would).

What KFP's backend records (``backend/src/v2/metadata/client.go``, ``driver/container.go``, ``driver/cache.go``):

- a run: a context of type ``system.PipelineRun`` named after the run's id (custom properties ``namespace``,
  ``pipeline_root``: ``<root>/<pipeline>/<run id>``, ``resource_name``, ``store_session_info``), child of the
  pipeline's ``system.Pipeline`` context;
- a task that ran: a ``system.ContainerExecution`` in that context, custom properties ``task_name``,
  ``display_name``, ``pod_name``, ``namespace``, ``image``, ``cache_fingerprint``; state COMPLETE; an OUTPUT
  event per output artifact, its path the output's name; the artifact: its URI under this run
  (``<root>/<pipeline>/<run>/<task>/<salt>/<output>``), type ``system.<Class>``, state LIVE, custom
  properties ``display_name`` (the output's name) and the artifact's metadata;
- a task taken from the cache: an execution of its own in this run, state CACHED, custom property
  ``cached_execution_id`` (the execution that computed it), and OUTPUT events to *that* execution's
  artifacts, whose URIs stay under the run that computed them. No file is written for this run.
"""

from __future__ import annotations

import importlib
import itertools
import os
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

PROTO_ROOT = Path(__file__).resolve().parent  # holds ml_metadata/proto/*.proto
SERVICE = "ml_metadata.MetadataStoreService"
SERVED = ("GetContextByTypeAndName", "GetExecutionsByContext", "GetEventsByExecutionIDs", "GetArtifactsByID")
GRPC_WEB_TYPES = ("application/grpc-web", "application/grpc-web+proto")
OK, INVALID_ARGUMENT, UNIMPLEMENTED = 0, 3, 12
DEFAULT_PAGE = 20  # ListOperationOptions.max_result_size's default
_compile_lock = threading.Lock()


def _compiled():
    """ML Metadata's messages, compiled from the real .proto files once per process."""
    with _compile_lock:
        if "ml_metadata.proto.metadata_store_service_pb2" not in sys.modules:
            import grpc_tools
            from grpc_tools import protoc

            out = tempfile.mkdtemp(prefix="fake-mlmd-")
            includes = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
            sources = ["ml_metadata/proto/metadata_store.proto", "ml_metadata/proto/metadata_store_service.proto"]
            code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{includes}", f"--python_out={out}", *sources])
            if code != 0:
                raise RuntimeError(f"protoc could not compile ML Metadata's protos under {PROTO_ROOT}")
            sys.path.insert(0, out)
        store = importlib.import_module("ml_metadata.proto.metadata_store_pb2")
        service = importlib.import_module("ml_metadata.proto.metadata_store_service_pb2")
    return store, service


pb, service_pb = _compiled()
METHODS = service_pb.DESCRIPTOR.services_by_name["MetadataStoreService"].methods_by_name


def _value(value: Any):
    """A metadata value as KFP's launcher records it (``StructValueToMLMDValue`` in metadata/converter.go): the
    artifact's metadata is a protobuf Struct, so every number is a double; a bool becomes the int 1 or 0, a list
    ``{"list": [...]}`` and an object ``{"struct": {...}}``."""
    recorded = pb.Value()
    if isinstance(value, str):
        recorded.string_value = value
    elif isinstance(value, bool):
        recorded.int_value = int(value)
    elif isinstance(value, (int, float)):
        recorded.double_value = float(value)
    elif isinstance(value, list):
        recorded.struct_value.update({"list": value})
    elif isinstance(value, dict):
        recorded.struct_value.update({"struct": value})
    else:
        raise TypeError(f"KFP records no metadata value of type {type(value).__name__}")
    return recorded


@dataclass
class RecordedOutput:
    """What a launcher recorded for one output: the artifact's URI, its KFP class and its metadata."""

    uri: str
    schema_title: str = "system.Artifact"
    metadata: dict | None = None


class FakeMetadataStore:
    """ML Metadata's store and the gRPC-Web calls the Kubeflow UI makes to it."""

    def __init__(self, violations: list[str] | None = None):
        self.contexts: dict[int, Any] = {}
        self.executions: dict[int, Any] = {}
        self.artifacts: dict[int, Any] = {}
        self.events: list[Any] = []
        self.associations: list[tuple[int, int]] = []  # (context id, execution id)
        self.parents: dict[int, int] = {}  # child context id -> parent context id
        self.calls: list[tuple[str, Any]] = []
        self.violations = violations if violations is not None else []  # requests ML Metadata would refuse
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- recording, as KFP's driver and launcher do ----------------------------------------------------------
    def record_run(self, run_id: str, pipeline_name: str, pipeline_root: str, namespace: str = "") -> int:
        with self._lock:
            pipeline = self._context("system.Pipeline", pipeline_name, {})
            run = self._context(
                "system.PipelineRun",
                run_id,
                {
                    "namespace": namespace,
                    "pipeline_root": f"{pipeline_root.rstrip('/')}/{pipeline_name}/{run_id}",
                    "resource_name": f"run-resource-{run_id[:8]}",
                    "store_session_info": "",
                },
            )
            self.parents[run.id] = pipeline.id  # PutParentContexts: the run's context is the pipeline's child
            return run.id

    def record_task(self, run_context: int, task: str, outputs: dict[str, RecordedOutput]) -> int:
        """A task that ran: a COMPLETE execution and its output artifacts."""
        with self._lock:
            execution = self._execution(run_context, task, pb.Execution.COMPLETE)
            for name, output in outputs.items():
                artifact = pb.Artifact(
                    id=next(self._ids), uri=output.uri, type=output.schema_title, state=pb.Artifact.LIVE
                )
                for key, value in (output.metadata or {}).items():
                    artifact.custom_properties[key].CopyFrom(_value(value))
                if "display_name" not in artifact.custom_properties:
                    artifact.custom_properties["display_name"].string_value = name
                artifact.custom_properties["store_session_info"].string_value = '{"Provider":"minio","Params":{}}'

                self.artifacts[artifact.id] = artifact
                self._output_event(execution.id, artifact.id, name)
            return execution.id

    def record_failed_task(self, run_context: int, task: str) -> int:
        """A task whose executor failed: the launcher publishes its execution FAILED, with no outputs."""
        with self._lock:
            return self._execution(run_context, task, pb.Execution.FAILED).id

    def record_cached_task(self, run_context: int, task: str, computed_by: int) -> int:
        """A task taken from the cache: a CACHED execution in this run, linked to the artifacts of the execution
        that computed them (``reuseCachedOutputs`` then ``PublishExecution`` with state CACHED)."""
        with self._lock:
            execution = self._execution(run_context, task, pb.Execution.CACHED)
            execution.custom_properties["cached_execution_id"].string_value = str(computed_by)
            for event in [e for e in self.events if e.execution_id == computed_by and e.type == pb.Event.OUTPUT]:
                self._output_event(execution.id, event.artifact_id, event.path.steps[0].key)
            return execution.id

    def execution_of(self, run_id: str, task: str):
        """The execution that computed ``task`` in run ``run_id`` (following a cached one to its origin)."""
        runs = [c.id for c in self.contexts.values() if c.type == "system.PipelineRun" and c.name == run_id]
        for context_id, execution_id in self.associations:
            execution = self.executions[execution_id]
            if context_id in runs and execution.custom_properties["task_name"].string_value == task:
                if "cached_execution_id" in execution.custom_properties:
                    return self.executions[int(execution.custom_properties["cached_execution_id"].string_value)]
                return execution
        return None

    def _context(self, type_name: str, name: str, properties: dict):
        for context in self.contexts.values():
            if context.type == type_name and context.name == name:
                return context
        context = pb.Context(id=next(self._ids), name=name, type=type_name, type_id=1 if "Run" in type_name else 2)
        for key, value in properties.items():
            context.custom_properties[key].string_value = value
        self.contexts[context.id] = context
        return context

    def _execution(self, run_context: int, task: str, state):
        execution = pb.Execution(id=next(self._ids), type="system.ContainerExecution", type_id=3)
        execution.last_known_state = state
        properties = {"task_name": task, "display_name": task, "pod_name": f"{task}-pod-{execution.id}"}
        properties |= {"namespace": "kubeflow", "image": "components-image", "cache_fingerprint": f"fp-{task}"}
        for key, value in properties.items():
            execution.custom_properties[key].string_value = value
        self.executions[execution.id] = execution
        self.associations.append((run_context, execution.id))
        return execution

    def _output_event(self, execution_id: int, artifact_id: int, name: str) -> None:
        event = pb.Event(artifact_id=artifact_id, execution_id=execution_id, type=pb.Event.OUTPUT)
        event.path.steps.add(key=name)
        self.events.append(event)

    # -- serving -----------------------------------------------------------------------------------------------
    def handle(self, path: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """An HTTP request to ``/ml_metadata.MetadataStoreService/<method>``: status, headers, body."""
        method = path.removeprefix(f"/{SERVICE}/")
        if not path.startswith(f"/{SERVICE}/") or method not in METHODS:
            return 404, {"Content-Type": "text/plain"}, f"Cannot POST {path}".encode()
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in GRPC_WEB_TYPES:
            self.violations.append(f"{method}: Content-Type {content_type!r} is not gRPC-Web binary")
            return 415, {"Content-Type": "text/plain"}, b"unsupported content type"
        try:
            message = _unframe(body)
        except ValueError as error:
            self.violations.append(f"{method}: {error}")
            return self._error(INVALID_ARGUMENT, str(error))
        request = getattr(service_pb, METHODS[method].input_type.name)()
        try:
            request.ParseFromString(message)
        except Exception as error:  # protobuf's DecodeError
            self.violations.append(f"{method}: not a {METHODS[method].input_type.full_name}: {error}")
            return self._error(INVALID_ARGUMENT, f"cannot parse {METHODS[method].input_type.full_name}")
        unknown = _unknown_fields(request)
        if unknown:
            self.violations.append(f"{method}: fields {unknown} are not in {METHODS[method].input_type.full_name}")
            return self._error(INVALID_ARGUMENT, f"unknown fields {unknown}")
        self.calls.append((method, request))
        if method not in SERVED:
            return self._error(UNIMPLEMENTED, f"{method} is not in the fake")
        with self._lock:
            answer = getattr(self, f"_{method}")(request)
        payload = answer.SerializeToString()
        trailer = b"grpc-status:0\r\ngrpc-message:\r\n"
        framed = struct.pack(">BI", 0, len(payload)) + payload + struct.pack(">BI", 0x80, len(trailer)) + trailer
        return 200, {"Content-Type": "application/grpc-web+proto"}, framed

    @staticmethod
    def _error(code: int, message: str) -> tuple[int, dict[str, str], bytes]:
        """Envoy's trailers-only answer: HTTP 200, the status in the headers, no body."""
        headers = {"Content-Type": "application/grpc-web+proto", "grpc-status": str(code)}
        return 200, headers | {"grpc-message": quote(message)}, b""

    def _GetContextByTypeAndName(self, request):
        answer = service_pb.GetContextByTypeAndNameResponse()
        for context in self.contexts.values():
            if context.type == request.type_name and context.name == request.context_name:
                answer.context.CopyFrom(context)  # not found: an empty answer, as ML Metadata gives
        return answer

    def _GetExecutionsByContext(self, request):
        found = [self.executions[e] for c, e in self.associations if c == request.context_id]
        answer = service_pb.GetExecutionsByContextResponse()
        if request.HasField("options"):  # paged by id, max_result_size at a time
            size = request.options.max_result_size or DEFAULT_PAGE
            start = int(request.options.next_page_token or 0)
            page, found = found[start : start + size], found
            answer.executions.extend(page)
            if start + size < len(found):
                answer.next_page_token = str(start + size)
        else:
            answer.executions.extend(found)
        return answer

    def _GetEventsByExecutionIDs(self, request):
        wanted = set(request.execution_ids)
        answer = service_pb.GetEventsByExecutionIDsResponse()
        answer.events.extend(event for event in self.events if event.execution_id in wanted)
        return answer

    def _GetArtifactsByID(self, request):
        answer = service_pb.GetArtifactsByIDResponse()  # not index-aligned: an id not found is left out
        answer.artifacts.extend(self.artifacts[i] for i in request.artifact_ids if i in self.artifacts)
        return answer


def _unframe(body: bytes) -> bytes:
    if len(body) < 5:
        raise ValueError("a gRPC-Web request body is one data frame: flag byte, 4-byte length, message")
    flag, length = struct.unpack(">BI", body[:5])
    if flag != 0 or len(body) != 5 + length:
        raise ValueError(f"not one uncompressed gRPC-Web data frame (flag {flag}, length {length}, {len(body)} bytes)")
    return body[5:]


def _unknown_fields(message, where: str = "") -> list[str]:
    """Every field a parsed message kept as unknown: its number did not match the real message's."""
    from google.protobuf import unknown_fields

    found = [f"{where}{field.field_number}" for field in unknown_fields.UnknownFieldSet(message)]
    for descriptor, value in message.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE:
            continue
        items = (
            value.values()
            if descriptor.message_type.GetOptions().map_entry
            else (value if descriptor.label == descriptor.LABEL_REPEATED else [value])
        )
        for item in items:
            if hasattr(item, "ListFields"):
                found += _unknown_fields(item, f"{where}{descriptor.name}.")
    return found
