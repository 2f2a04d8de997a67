"""A pipeline that gates a candidate against a baseline, both imported as Model artifacts.

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would
turn into strings.
"""

from kfp import dsl

from components.evaluate.component import evaluate


@dsl.pipeline(name="gate-against-baseline")
def gate_against_baseline(dataset_uri: str, candidate_uri: str, baseline_uri: str, threshold: float):
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    candidate = dsl.importer(artifact_uri=candidate_uri, artifact_class=dsl.Model)
    baseline = dsl.importer(artifact_uri=baseline_uri, artifact_class=dsl.Model)
    evaluate(
        model=candidate.output,
        dataset=dataset.output,
        baseline_model=baseline.output,
        accuracy_threshold=threshold,
    )
