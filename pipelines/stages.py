"""Pipeline fragments shared by the training pipelines, with each step's Kubernetes settings applied."""

from dataclasses import fields

from kfp import dsl

from components.build_bento.component import build_bento
from components.check_arguments.component import check_arguments
from components.containerize.component import containerize
from components.dvc_pull.component import dvc_pull
from components.evaluate.component import evaluate
from components.promotion.component import record_promotion
from components.resolve_revision.component import resolve_revision
from components.train.config import TrainConfig
from pipelines.deploy_stages import deploy_bento_locally, deploy_image
from pipelines.kubernetes_settings import ClusterSettings, configure_step

TRAINING_ARGUMENTS = tuple(item.name for item in fields(TrainConfig))


def training_arguments(values: dict) -> dict:
    """The pipeline's training parameters (every ``TrainConfig`` field), to pass on to a training step."""
    return {name: values[name] for name in TRAINING_ARGUMENTS}


def check_first(values: dict, settings: ClusterSettings, distributed: bool = False) -> dsl.PipelineTask:
    """The first step: every argument a later step would fail on, checked in seconds; and the train
    step's placement (``node_selector``, ``tolerations`` outputs) fitted to ``gpus``."""
    arguments = {name: values[name] for name in check_arguments.component_spec.inputs if name in values}
    checked = check_arguments(**arguments, distributed=distributed).set_display_name("check arguments")
    return configure_step(checked, "check-arguments", settings)


def pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings: ClusterSettings, after):
    """resolve the revision (uncached) → dvc pull at that commit, so caching keys on the data's commit."""
    resolved = resolve_revision(repo_url=repo_url, rev=rev).set_display_name("resolve data revision").after(after)
    configure_step(resolved, "resolve-revision", settings)
    pulled = dvc_pull(
        repo_url=repo_url,
        rev=resolved.output,
        paths=[data_path],
        remote=dvc_remote,
        remote_config=dvc_remote_config,
        jobs=dvc_jobs,
        cache_dir=settings.dvc_cache_dir,
    ).set_display_name("dvc pull")
    return configure_step(pulled, "dvc-pull", settings)


def evaluate_and_gate(
    model, dataset, accuracy_threshold, packaging, settings: ClusterSettings, deployment: dict
) -> dsl.PipelineTask:
    """evaluate on the test split; only if it says promote: record the promotion, build the bento
    and (when ``packaging["build_image"]``) its container image, and deploy it where ``deployment["target"]``
    and ``deployment["namespace"]`` say (``pipelines.deploy_stages``)."""
    evaluated = evaluate(model=model, dataset=dataset, accuracy_threshold=accuracy_threshold).set_display_name(
        "evaluate"
    )
    configure_step(evaluated, "evaluate", settings)
    promote = evaluated.outputs["Output"]  # evaluate's promotion decision (see components/evaluate/README.md)
    with dsl.If(promote == True, name="promotion-gate"):  # noqa: E712 (KFP condition)
        recorded = record_promotion(model=model, evaluation=evaluated.outputs["metrics"])
        configure_step(recorded.set_display_name("record promotion"), "record-promotion", settings)
        bento = build_bento(model=model, evaluation=evaluated.outputs["metrics"], base_image=packaging["base_image"])
        configure_step(bento.set_display_name("build bento"), "build-bento", settings)
        deployed_from = (bento.outputs["bento"], model, dataset, evaluated)
        deploy_bento_locally(deployment["target"], *deployed_from, settings)
        with (
            dsl.If(packaging["build_image"] == True, name="image-build"),  # noqa: E712 (KFP condition)
            dsl.If(packaging["image_repository"] != "", name="registry-given"),
        ):
            image = containerize(
                bento=bento.outputs["bento"],
                image_repository=packaging["image_repository"],
                base_image=packaging["base_image"],
                push=packaging["push_image"],
                registry_auth_file=settings.registry_auth_file,
            )
            configure_step(image.set_display_name("containerize"), "containerize", settings)
            deploy_image(deployment["target"], deployment["namespace"], image.output, *deployed_from, settings)
    return evaluated
