"""The deploy component's parameters made into a ``DeployRequest``, and evaluate's decision checked, before anything
is applied. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.common.kube.values import InvalidValue, validate_name, validate_namespace
from components.deploy.target import CLUSTER_TARGETS, IMAGE_BY_DIGEST, TARGETS, DeployRequest, lineage_labels


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


def check_deploy_place(values: Mapping[str, Any]) -> None:
    """A training pipeline's ``deploy_target`` and ``deploy_namespace``, with the packaging they need (pipeline
    argument names); ``InvalidValue`` naming the first problem."""
    target, namespace = values["deploy_target"], values.get("deploy_namespace", "")
    if target not in TARGETS:
        raise InvalidValue(f"deploy_target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "local":
        if namespace:
            raise InvalidValue(
                f"deploy_namespace {namespace!r} is for the cluster targets (kserve, deployment); deploy_target local "
                "serves on the machine that runs the step: leave deploy_namespace empty"
            )
        return
    if not namespace:
        return  # nothing is deployed to a cluster
    try:
        validate_namespace(namespace)
    except InvalidValue as error:
        raise InvalidValue(f"deploy_namespace: {error}") from None
    if not (values.get("build_image", True) and values.get("image_repository")):
        raise InvalidValue(
            f"deploy_namespace {namespace!r} deploys the serving image, but none is built: give image_repository "
            "(and build_image true), or leave deploy_namespace empty"
        )
    if not values.get("push_image", True):
        raise InvalidValue(
            f"deploy_namespace {namespace!r} deploys the serving image, which the cluster pulls: push_image must be "
            "true"
        )


def check_promotion(values: Mapping[str, Any]) -> None:
    """The promote pipeline's arguments (names as the pipeline declares them), checked as its deploy steps will
    check them; ``InvalidValue`` naming the first problem. (The KServe mode a canary needs is a cluster setting:
    the steps check it.)"""
    target = values.get("target")
    if target not in CLUSTER_TARGETS:
        raise InvalidValue(
            f"target must be one of {', '.join(CLUSTER_TARGETS)} (production is a cluster), got {target!r}"
        )
    if not values.get("verified_deployment"):
        raise InvalidValue(
            "verified_deployment is required: the URI of the training run's deploy output that verified the image"
        )
    validate_name(values.get("name"), "service name")
    validate_namespace(values.get("namespace"))
    if not isinstance(values.get("image"), str) or not IMAGE_BY_DIGEST.match(values["image"]):
        raise InvalidValue(
            f"image {values.get('image')!r} is not pinned by digest: give repository@sha256:<64 hex digits>, the image "
            "the training run verified"
        )
    canary = values.get("canary_percent", -1)
    if isinstance(canary, bool) or not isinstance(canary, int) or not (canary == -1 or 0 <= canary <= 100):
        raise InvalidValue(f"canary_percent must be an integer from 0 to 100, or -1 for no canary, got {canary!r}")
