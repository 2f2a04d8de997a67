"""KFP component: find the model a candidate is compared with, as a ``Model`` for evaluate's ``baseline_model``."""

from kfp import dsl
from kfp.dsl import Model, Output

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def find_baseline(baseline_model: Output[Model], baseline: str = "production"):
    """Finds the baseline: the version the model registry says is in production, none, or a model by URI.

    The registry is the step's environment's (``KFP_TORCH_REGISTRY`` and the variables beside it, see
    ``components/register/README.md``), never a parameter.

    Args:
        baseline: ``production`` (the version marked as serving in the registry), ``none``, or a model's URI
            (``gs://``, ``s3://``, ``minio://`` or an absolute path to a Model directory). Anything else fails
            the step at once.
        baseline_model: for evaluate's ``baseline_model``. With a baseline: its model files (``spec.json``,
            weights, ``model.onnx``) and metadata ``baseline`` (``production`` or ``uri``), ``reason``,
            ``registry``, ``registry_url``, ``model_name``, ``version``, ``version_id``, ``uri``. Without one
            (``none``, no registry, or no version in production yet): an empty directory and metadata
            ``baseline`` = ``none`` with a ``reason`` saying why.
    """
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # before any client's

    from components.find_baseline.baseline import fetch_baseline

    metadata = fetch_baseline(baseline, baseline_model.path)
    baseline_model.metadata.update(metadata)
    print(metadata["reason"])
