"""The cluster target for a request: ``kserve`` or ``deployment``, talking to the cluster the step runs in."""

from __future__ import annotations

from collections.abc import Callable

from components.deploy.deployment_target import DeploymentTarget
from components.deploy.kserve_target import KServeTarget
from components.deploy.kube_client import DeployApi
from components.deploy.target import DeployRequest, UrlResolver, in_cluster_url


def cluster_target(
    request: DeployRequest,
    api: DeployApi | None = None,
    resolve_url: UrlResolver = in_cluster_url,
    echo: Callable[[str], None] = print,
) -> DeploymentTarget | KServeTarget:
    """The target serving ``request.namespace/request.name`` (in-cluster credentials, or the kubeconfig)."""
    request.validate()
    kinds = {"deployment": DeploymentTarget, "kserve": KServeTarget}
    if request.target not in kinds:
        raise ValueError(f"target {request.target!r} is not a cluster target ({', '.join(kinds)})")
    api = api or DeployApi.from_environment()
    return kinds[request.target](api, request.namespace, request.name, resolve_url=resolve_url, echo=echo)
