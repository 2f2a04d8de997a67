"""KFP component: record the promotion decision for a model that passed the gate."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def record_promotion(model: Input[Model], evaluation: Input[Metrics], record: Output[Artifact]):
    """Records that ``model`` was promoted.

    Args:
        model: the promoted model (from ``train``).
        evaluation: its evaluation metrics (from ``evaluate``).
        record: a directory holding ``promotion.json``: model URI, dataset
            commit and md5, classes, test metrics and the time of promotion.
    """
    from components.promotion.record import record_promotion as write_record

    scores = {key: value for key, value in evaluation.metadata.items() if key not in ("display_name",)}
    content = write_record(model.path, model.uri, scores, record.path)
    record.metadata.update({"model_uri": content["model_uri"], "promoted_at": content["promoted_at"]})
    print(f"promoted {content['model_uri']} (dataset commit {content['dataset'].get('commit', 'unknown')})")
