"""Pipelines that gate a candidate against a baseline, each imported as a Model artifact.

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would
turn into strings.
"""

from kfp import dsl

from components.evaluate.component import evaluate

NO_BASELINE_REASON = "no version of digits is in production yet"


@dsl.pipeline(name="gate-against-baseline")
def gate_against_baseline(dataset_uri: str, candidate_uri: str, baseline_uri: str, threshold: float):
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    candidate = dsl.importer(artifact_uri=candidate_uri, artifact_class=dsl.Model)
    baseline = dsl.importer(
        artifact_uri=baseline_uri,
        artifact_class=dsl.Model,
        metadata={"baseline": "production", "registry": "mlflow", "model_name": "digits", "version": "3"},
    )
    evaluate(
        model=candidate.output,
        dataset=dataset.output,
        baseline_model=baseline.output,
        accuracy_threshold=threshold,
    )


@dsl.pipeline(name="gate-without-baseline")
def gate_without_baseline(dataset_uri: str, candidate_uri: str, empty_uri: str, threshold: float):
    """The baseline-resolution step's answer when nothing is in production: an empty Model that says why."""
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    candidate = dsl.importer(artifact_uri=candidate_uri, artifact_class=dsl.Model)
    baseline = dsl.importer(
        artifact_uri=empty_uri, artifact_class=dsl.Model, metadata={"baseline": "none", "reason": NO_BASELINE_REASON}
    )
    evaluate(
        model=candidate.output, dataset=dataset.output, baseline_model=baseline.output, accuracy_threshold=threshold
    )
