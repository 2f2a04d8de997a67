"""``KubernetesJobClient``: the calls a job launcher makes for one ``JobKind``, each retried as ``api`` retries.

Create, get and delete the job (a custom object), list its pods and the Events about it, find the pod whose log
is followed and stream that log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from components.common.kube.api import (
    REQUEST_TIMEOUT_SECONDS,
    KubernetesApi,
    KubernetesApiError,
    RetryPolicy,
    http_status,
    is_webhook_refusal,
    load_api_client,
    server_message,
)
from components.common.kube.kinds import JobKind

LOG_SILENCE_SECONDS = 300  # a log stream silent this long is reopened: a dead connection never says it is dead
# What the API server answers for a path it serves nothing at, e.g. a kind whose CRD is not installed.
NOT_SERVED = "the server could not find the requested resource"


class KubernetesJobClient(KubernetesApi):
    """The few calls the launcher makes for jobs of ``kind``, through the official Kubernetes Python client."""

    def __init__(self, api_client, kind: JobKind, retry: RetryPolicy = RetryPolicy()):
        from kubernetes import client

        super().__init__(api_client, retry)
        self.kind = kind
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def from_environment(cls, kind: JobKind, retry: RetryPolicy = RetryPolicy()) -> KubernetesJobClient:
        """In-cluster service-account credentials, or the local kubeconfig."""
        return cls(load_api_client(), kind, retry)

    def _path(self, namespace: str) -> dict[str, str]:
        return {
            "group": self.kind.group,
            "version": self.kind.version,
            "namespace": namespace,
            "plural": self.kind.plural,
        }

    def create(
        self,
        manifest: dict[str, Any],
        hold_signals: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> dict[str, Any] | None:
        """Create the job; None when one of its name exists already (HTTP 409: a retried step, or our own create
        sent again after its reply was lost)."""
        namespace = manifest["metadata"]["namespace"]
        try:
            return self.call(
                "create",
                self.kind.resource,
                namespace,
                lambda: self.custom.create_namespaced_custom_object(
                    body=manifest, **self._path(namespace), _request_timeout=REQUEST_TIMEOUT_SECONDS
                ),
                answers={409: None},
                hold_signals=hold_signals,
            )
        except KubernetesApiError as error:
            cause = error.__cause__
            if http_status(cause) == 404 and server_message(cause) in ("", NOT_SERVED):
                raise KubernetesApiError(self.kind.not_served(namespace)) from cause
            if is_webhook_refusal(cause) and (hint := self.kind.explain_refusal(manifest, server_message(cause))):
                raise KubernetesApiError(f"{error} {hint}") from cause
            raise

    def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The job, or None when there is none of that name (HTTP 404)."""
        return self.call(
            "get",
            self.kind.resource,
            namespace,
            lambda: self.custom.get_namespaced_custom_object(
                name=name, **self._path(namespace), _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
            answers={404: None},
        )

    def delete(self, name: str, namespace: str) -> bool:
        """Delete the job and, in the foreground, its pods first. False when it was already gone."""
        deleted = self.call(
            "delete",
            self.kind.resource,
            namespace,
            lambda: self.custom.delete_namespaced_custom_object(
                name=name,
                body={"propagationPolicy": "Foreground"},
                **self._path(namespace),
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            ),
            answers={404: None},
        )
        return deleted is not None

    def pods(self, name: str, namespace: str, selector: str = "") -> list:
        """The job's pods (``V1Pod``), or those matching ``selector`` (a template with {name})."""
        label_selector = (selector or self.kind.pods_selector).format(name=name)
        listed = self.call(
            "list",
            "pods",
            namespace,
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT_SECONDS
            ),
        )
        return listed.items

    def events(self, names: list[str], namespace: str) -> list:
        """The Events (``CoreV1Event``) about the objects named ``names`` in ``namespace``, oldest first: one list per
        name, on the ``involvedObject.name`` field the API server indexes."""
        found = []
        for name in dict.fromkeys(names):
            listed = self.call(
                "list",
                "events",
                namespace,
                lambda name=name: self.core.list_namespaced_event(
                    namespace, field_selector=f"involvedObject.name={name}", _request_timeout=REQUEST_TIMEOUT_SECONDS
                ),
            )
            found += listed.items
        return sorted(found, key=_event_time)

    def master_pod(self, name: str, namespace: str):
        """The master pod (``V1Pod``) once its container has started, preferring a running one; else None."""
        pods = [
            pod
            for pod in self.pods(name, namespace, self.kind.master_selector)
            if pod.status
            and pod.status.phase in ("Running", "Succeeded", "Failed")
            and not pod.metadata.deletion_timestamp
        ]
        pods.sort(key=lambda pod: pod.status.phase != "Running")
        return pods[0] if pods else None

    def follow_log(self, pod: str, namespace: str) -> Iterator[str]:
        """Yield the log lines of the pod's training container as they come, each after its timestamp, until the
        container ends or the API server ends the stream."""
        response = self.call(
            "get",
            "pods/log",
            namespace,
            lambda: self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=self.kind.log_container,  # required as soon as the pod has another container
                follow=True,
                timestamps=True,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT_SECONDS, LOG_SILENCE_SECONDS),
            ),
        )
        try:
            buffer = b""
            for chunk in response.stream(1024):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buffer:
                yield buffer.decode(errors="replace")
        finally:
            response.release_conn()


def _event_time(event) -> str:
    stamp = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return stamp.isoformat() if stamp else ""
