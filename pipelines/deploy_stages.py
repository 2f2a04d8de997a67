"""Where the training pipelines deploy a promoted model: ``deploy_target`` and ``deploy_namespace`` decide.

- ``local`` (what ``kfp.local`` and ``make run`` use): the bento ``build_bento`` made is served with
  ``bentoml serve`` on 127.0.0.1, verified and stopped; ``make serve`` serves it again. No namespace.
- ``kserve`` or ``deployment``, with a namespace (staging): the image ``containerize`` built, by digest, once it is
  pushed. Without a namespace nothing is deployed to a cluster.

Either way the deploy step verifies the new revision with held-out test images against evaluate's predictions, and
rolls back on failure (``components/deploy``). The cluster's deploy settings (``ClusterSettings.deploy``) become the
task's arguments.
"""

from __future__ import annotations

from kfp import dsl

from components.deploy.component import deploy
from pipelines.kubernetes_settings import ClusterSettings, configure_step


def deploy_bento_locally(target, bento, model, dataset, evaluated, settings: ClusterSettings, registered=None) -> None:
    """Inside the promotion gate, after ``build_bento``: deploy with target ``local`` when that is the target.
    ``registered``: the register step's output, when the pipeline has one."""
    with dsl.If(target == "local", name="deploy-locally"):
        task = deploy(
            target="local",
            bento=bento,
            model=model,
            dataset=dataset,
            predictions=evaluated.outputs["predictions"],
            evaluation=evaluated.outputs["metrics"],
            **_registered(registered),
            verify_images=settings.deploy.verify_images,
            deadline_seconds=settings.deploy.deadline_seconds,
            pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        configure_step(task.set_display_name("deploy (local)"), "deploy", settings)


def deploy_image(
    target, namespace, image, bento, model, dataset, evaluated, settings: ClusterSettings, registered=None
) -> None:
    """After ``containerize``: deploy the image to ``namespace`` (staging) when a cluster target and a namespace
    are given; with ``registered`` (the register step's output) the image is recorded on the registered version."""
    with (
        dsl.If(target != "local", name="deploy-to-cluster"),
        dsl.If(namespace != "", name="namespace-given"),
    ):
        task = deploy(
            target=target,
            namespace=namespace,
            image=image,
            bento=bento,
            model=model,
            dataset=dataset,
            predictions=evaluated.outputs["predictions"],
            evaluation=evaluated.outputs["metrics"],
            **_registered(registered),
            pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **settings.deploy.arguments(),
        )
        configure_step(task.set_display_name("deploy"), "deploy", settings)


def _registered(registered) -> dict:
    """The deploy task's ``registered`` input, when the pipeline has a register step (KFP takes no None)."""
    return {"registered": registered} if registered is not None else {}
