"""The Kubernetes calls the cluster deploy targets make, each retried as ``components.common.kube.api`` retries.

``DeployApi`` applies objects with server-side apply (``PATCH`` with ``application/apply-patch+yaml``, a field
manager, and ``force`` off as ``kubectl apply --server-side`` has it: a field another manager owns with another
value is a conflict, reported with its owner, never silently taken), reads and deletes them, and reads what a
diagnosis needs: pods, a container's last log lines, Warning events.

The official client (30.x) has no switch for the apply media type on its typed ``patch_*`` methods (they pick
JSON patch), so applies go through ``ApiClient.call_api`` with the path the typed method would use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components.common.kube.api import (
    REQUEST_TIMEOUT_SECONDS,
    KubernetesApi,
    KubernetesApiError,
    RetryPolicy,
    describe,
    http_status,
    load_api_client,
)

FIELD_MANAGER = "kfp-torch-lifecycle-deploy"
APPLY_MEDIA_TYPE = "application/apply-patch+yaml"
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class Kind:
    """A resource kind the targets write: its API path and what the RBAC authorizer calls it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    missing: str = ""  # what a 404 for the kind itself means on this cluster, and what to do instead

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``plural.group`` (``plural`` in the core group), as RBAC rules and kubectl name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str, name: str = "") -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{root}/namespaces/{namespace}/{self.plural}" + (f"/{name}" if name else "")


DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment")
SERVICES = Kind("", "v1", "services", "Service")
HPAS = Kind(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    "HorizontalPodAutoscaler",
    missing="this cluster serves no autoscaling/v2 (Kubernetes 1.23 or later serves it)",
)
INFERENCE_SERVICES = Kind(
    "serving.kserve.io",
    "v1beta1",
    "inferenceservices",
    "InferenceService",
    missing=(
        "this cluster serves no KServe InferenceService (KServe is not installed); install KServe, or deploy with "
        "target=deployment (a plain Deployment, Service and HorizontalPodAutoscaler, which every cluster serves)"
    ),
)


class ApplyConflict(KubernetesApiError):
    """Another field manager owns a field the apply would change."""


class DeployApi(KubernetesApi):
    """The deploy targets' calls: apply, get, delete objects of a ``Kind``; pods, logs and events to diagnose."""

    def __init__(self, api_client, retry: RetryPolicy = RetryPolicy(), field_manager: str = FIELD_MANAGER):
        from kubernetes import client

        super().__init__(api_client, retry)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.field_manager = field_manager

    @classmethod
    def from_environment(cls, retry: RetryPolicy = RetryPolicy()) -> DeployApi:
        """In-cluster service-account credentials, or the local kubeconfig."""
        return cls(load_api_client(), retry)

    def apply(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``body`` (created when missing); the object as the API server answers it."""
        metadata = body["metadata"]
        name, namespace = metadata["name"], metadata["namespace"]
        try:
            return self.call(
                "patch",
                kind.resource,
                namespace,
                lambda: self.api_client.call_api(
                    kind.path(namespace, name),
                    "PATCH",
                    query_params=[("fieldManager", self.field_manager), ("force", "false")],
                    header_params={"Content-Type": APPLY_MEDIA_TYPE, "Accept": "application/json"},
                    body=body,
                    response_type="object",
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _preload_content=True,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                ),
            )
        except KubernetesApiError as error:
            raise self._explained(error, kind, namespace, name) from error.__cause__

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none of that name."""
        try:
            return self.call(
                "get",
                kind.resource,
                namespace,
                lambda: self.api_client.call_api(
                    kind.path(namespace, name),
                    "GET",
                    header_params={"Accept": "application/json"},
                    response_type="object",
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _preload_content=True,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                ),
            )
        except KubernetesApiError as error:
            cause = error.__cause__
            if cause is not None and http_status(cause) == 404 and not _kind_not_served(cause):
                return None
            raise self._explained(error, kind, namespace, name) from cause

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Delete the object, its dependents in the background (as kubectl does); False when it was gone."""
        deleted = self.call(
            "delete",
            kind.resource,
            namespace,
            lambda: self.api_client.call_api(
                kind.path(namespace, name),
                "DELETE",
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body={"propagationPolicy": "Background"},
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            ),
            answers={404: None},
        )
        return deleted is not None

    def pods(self, namespace: str, selector: str) -> list:
        """The pods (``V1Pod``) matching a label selector."""
        listed = self.call(
            "list",
            "pods",
            namespace,
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
        )
        return listed.items

    def log_tail(self, namespace: str, pod: str, container: str, previous: bool = False) -> list[str]:
        """The last lines a container wrote (``previous``: its last terminated run, a crash-looping one's)."""
        text = self.call(
            "get",
            "pods/log",
            namespace,
            lambda: self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                tail_lines=LOG_TAIL_LINES,
                previous=previous,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            ),
            answers={400: "", 404: ""},  # no such run (yet): nothing to quote
        )
        return [line for line in (text or "").splitlines() if line.strip()]

    def warnings(self, namespace: str) -> list:
        """The namespace's Warning events (``CoreV1Event``): why a ReplicaSet could not create its pods, say."""
        listed = self.call(
            "list",
            "events",
            namespace,
            lambda: self.core.list_namespaced_event(
                namespace, field_selector="type=Warning", _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
        )
        return listed.items

    def _explained(self, error: KubernetesApiError, kind: Kind, namespace: str, name: str) -> KubernetesApiError:
        """A 404 for the kind itself (not for the object): the cluster does not serve it; a 409 on apply: whose
        fields conflict, in the API server's words, and the ways out."""
        cause = error.__cause__
        status = http_status(cause) if cause is not None else None
        if status == 404 and kind.missing and _kind_not_served(cause):
            return KubernetesApiError(f"cannot deploy {kind.kind} {namespace}/{name}: {kind.missing}")
        if status == 409:
            return ApplyConflict(
                f"cannot apply {kind.kind} {namespace}/{name}: {describe(cause)}. Another field manager changed "
                f"these fields after this step last applied them; this step does not take them over (server-side "
                f"apply without force, as kubectl's default). Undo that change, or take the fields over with "
                f"`kubectl apply --server-side --force-conflicts --field-manager={self.field_manager}`"
            )
        return error


def _kind_not_served(error: BaseException) -> bool:
    """The API server's 404 for a path it does not serve (no such resource) rather than for a missing object: its
    Status has no ``details.name``, and the message is the generic one."""
    try:
        status = json.loads(getattr(error, "body", "") or "{}")
    except ValueError:
        return True
    return not (status.get("details") or {}).get("name") and "not found" not in status.get("message", "").lower()
