"""A pipeline that deploys an evaluated model's bento with the ``local`` target, each input imported as an artifact.

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would turn into strings.
"""

from kfp import dsl

from components.deploy.component import deploy


@dsl.pipeline(name="deploy-locally")
def deploy_locally(
    model_uri: str, dataset_uri: str, predictions_uri: str, bento_uri: str, fail_on_rollback: bool = True
):
    model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    predictions = dsl.importer(artifact_uri=predictions_uri, artifact_class=dsl.Artifact)
    bento = dsl.importer(artifact_uri=bento_uri, artifact_class=dsl.Artifact)
    deploy(
        target="local",
        bento=bento.output,
        model=model.output,
        dataset=dataset.output,
        predictions=predictions.output,
        fail_on_rollback=fail_on_rollback,
        pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
