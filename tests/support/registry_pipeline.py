"""A pipeline that registers an imported model, then finds the baseline, as the training pipelines will.

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would
turn into strings.
"""

from kfp import dsl

from components.find_baseline.component import find_baseline
from components.register.component import register

EVALUATION = {"accuracy": 0.9, "macro_f1": 0.89, "promote": True, "reason": "accuracy 0.9000 >= threshold 0.5000"}


@dsl.pipeline(name="register-then-find-baseline")
def register_then_find_baseline(model_uri: str, baseline: str):
    model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
    metrics = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Metrics, metadata=EVALUATION)
    registered = register(
        model=model.output,
        evaluation=metrics.output,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    find_baseline(baseline=baseline).after(registered)
