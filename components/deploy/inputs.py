"""The deploy component's parameters made into a ``DeployRequest``, and evaluate's decision checked, before anything
is applied. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.common.kube.values import InvalidValue
from components.deploy.target import DeployRequest, lineage_labels


class NotPromoted(ValueError):
    """A model that evaluate did not promote."""


def deploy_request(
    target: str,
    name: str,
    namespace: str = "",
    image: str = "",
    bento: str = "",
    model_tag: str = "",
    dataset_commit: str = "",
    pipeline_run: str = "",
    canary_percent: int = -1,
    promote: bool = False,
    **capacity: Any,
) -> DeployRequest:
    """The request the component's parameters describe: ``canary_percent`` -1 is no canary; the lineage becomes
    labels; ``capacity`` holds the other ``DeployRequest`` fields (replicas, resources, the cluster's settings).
    Checked: ``InvalidValue`` names the first bad value (``promote`` only for the targets that can)."""
    request = DeployRequest(
        target=target,
        name=name,
        namespace=namespace,
        image=image,
        bento=bento,
        labels=lineage_labels(model_tag, dataset_commit, pipeline_run),
        canary_percent=None if canary_percent == -1 else canary_percent,
        **capacity,
    )
    request.validate()
    if target == "local":
        if namespace:
            raise InvalidValue(f"target local serves on this machine and takes no namespace, got {namespace!r}")
        if request.canary or promote:
            raise InvalidValue(
                "target local serves one bento at a time: canaries and their promotion need a cluster target "
                "(kserve, deployment)"
            )
    return request


def refuse_unpromoted(evaluation: Mapping[str, Any] | None) -> None:
    """Fail when evaluate's metrics say the model was not promoted (nothing to check when none are given)."""
    if evaluation is None or "promote" not in evaluation:
        return
    if evaluation["promote"] is not True:
        raise NotPromoted(
            f"evaluate did not promote this model ({evaluation.get('reason', 'no reason given')}): it is not deployed"
        )
