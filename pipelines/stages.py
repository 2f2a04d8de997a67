"""Pipeline fragments shared by the training pipelines."""

from kfp import dsl

from components.build_bento.component import build_bento
from components.containerize.component import containerize
from components.dvc_pull.component import dvc_pull
from components.evaluate.component import evaluate
from components.promotion.component import record_promotion


def pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs) -> dsl.PipelineTask:
    return dvc_pull(
        repo_url=repo_url,
        rev=rev,
        paths=[data_path],
        remote=dvc_remote,
        remote_config=dvc_remote_config,
        jobs=dvc_jobs,
    ).set_display_name("dvc pull")


def evaluate_and_gate(model, dataset, accuracy_threshold, packaging) -> dsl.PipelineTask:
    """evaluate on the test split; only if it says promote: record the promotion, build the bento
    and (when ``packaging["build_image"]``) its container image."""
    evaluated = evaluate(model=model, dataset=dataset, accuracy_threshold=accuracy_threshold).set_display_name(
        "evaluate"
    )
    with dsl.If(evaluated.outputs["Output"] == True, name="promotion-gate"):  # noqa: E712 (KFP condition)
        record_promotion(model=model, evaluation=evaluated.outputs["metrics"]).set_display_name("record promotion")
        bento = build_bento(
            model=model, evaluation=evaluated.outputs["metrics"], base_image=packaging["base_image"]
        ).set_display_name("build bento")
        with dsl.If(packaging["build_image"] == True, name="image-build"):  # noqa: E712 (KFP condition)
            containerize(
                bento=bento.outputs["bento"],
                image_repository=packaging["image_repository"],
                base_image=packaging["base_image"],
                push=packaging["push_image"],
            ).set_display_name("containerize")
    return evaluated
