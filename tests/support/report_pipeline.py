"""Pipelines that run the report step on imported evaluate outputs, with and without the optional inputs.

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would
turn into strings.
"""

from kfp import dsl

from components.report.component import report

REGISTRATION = {"registry": "mlflow", "model_name": "photos", "version": "8", "uri": "models:/photos/8"}


@dsl.pipeline(name="report-alone")
def report_alone(comparison_uri: str, worst_images_uri: str):
    comparison = dsl.importer(artifact_uri=comparison_uri, artifact_class=dsl.Artifact)
    worst = dsl.importer(artifact_uri=worst_images_uri, artifact_class=dsl.Artifact)
    report(comparison=comparison.output, worst_images=worst.output)


@dsl.pipeline(name="report-registered")
def report_registered(comparison_uri: str, worst_images_uri: str, registration_uri: str, image: str):
    comparison = dsl.importer(artifact_uri=comparison_uri, artifact_class=dsl.Artifact)
    worst = dsl.importer(artifact_uri=worst_images_uri, artifact_class=dsl.Artifact)
    registered = dsl.importer(artifact_uri=registration_uri, artifact_class=dsl.Artifact, metadata=REGISTRATION)
    report(comparison=comparison.output, worst_images=worst.output, registration=registered.output, image=image)
