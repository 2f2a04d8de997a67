"""Where the training pipelines deploy a promoted model: ``deploy_target`` and ``deploy_namespace`` decide.

- ``local`` (what ``kfp.local`` and ``make run`` use): the bento ``build_bento`` made is served with
  ``bentoml serve`` on 127.0.0.1, verified and stopped; ``make serve`` serves it again. No namespace.
- ``kserve`` or ``deployment``, with a namespace (staging): the image ``containerize`` built, by digest, once it is
  pushed. Without a namespace nothing is deployed to a cluster.

Either way the deploy step verifies the new revision with held-out test images against evaluate's predictions, and
rolls back on failure (``components/deploy``). The cluster's deploy settings (``ClusterSettings.deploy``) become the
task's arguments. ``deploy_then`` ends a way through the packaging: the deployment its target calls for, then
``finish`` (the run report) with the deployment's artifact when there is one.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl

from components.deploy.component import deploy
from pipelines.kubernetes_settings import ClusterSettings, configure_step


def deploy_then(
    finish: Callable[[dict], object],
    deployment: dict,
    promoted: dict,
    settings: ClusterSettings,
    image=None,
    branch: str = "",
) -> None:
    """Deploy where ``deployment`` (``target``, ``namespace``) says, then ``finish(extra)``: ``extra`` holds the
    ``deployment`` artifact when something was deployed (and the ``image`` when given). ``promoted``: the
    ``bento``, ``model``, ``dataset``, the ``evaluated`` task and the ``registered`` version. Without an ``image``
    (none built on this way) only the local target deploys. ``branch`` keeps the condition names unique."""
    built = {"image": image} if image is not None else {}
    with dsl.If(deployment["target"] == "local", name=f"deploy-locally{branch}"):
        local = deploy_bento_locally(promoted, settings)
        finish({**built, "deployment": local.outputs["deployment"]})
    if image is not None:
        with dsl.Elif(deployment["namespace"] != "", name=f"deploy-to-namespace{branch}"):
            cluster = deploy_image(deployment["target"], deployment["namespace"], image, promoted, settings)
            finish({**built, "deployment": cluster.outputs["deployment"]})
    with dsl.Else(name=f"not-deployed{branch}"):
        finish(built)


def deploy_bento_locally(promoted: dict, settings: ClusterSettings) -> dsl.PipelineTask:
    """The deploy task for target ``local``: ``build_bento``'s bento, served on this machine and verified."""
    task = deploy(
        target="local",
        verify_images=settings.deploy.verify_images,
        deadline_seconds=settings.deploy.deadline_seconds,
        pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        **_verified_with(promoted),
    )
    return configure_step(task.set_display_name("deploy (local)"), "deploy", settings)


def deploy_image(target, namespace, image, promoted: dict, settings: ClusterSettings) -> dsl.PipelineTask:
    """The deploy task for a cluster target: ``containerize``'s image into ``namespace`` (staging), the image recorded
    on the registered version."""
    task = deploy(
        target=target,
        namespace=namespace,
        image=image,
        pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        **_verified_with(promoted),
        **settings.deploy.arguments(),
    )
    return configure_step(task.set_display_name("deploy"), "deploy", settings)


def _verified_with(promoted: dict) -> dict:
    evaluated = promoted["evaluated"]
    inputs = {
        "bento": promoted["bento"],
        "model": promoted["model"],
        "dataset": promoted["dataset"],
        "predictions": evaluated.outputs["predictions"],
        "evaluation": evaluated.outputs["metrics"],
    }
    if promoted.get("registered") is not None:  # KFP takes no None for an input
        inputs["registered"] = promoted["registered"]
    return inputs
