"""KFP component: register a promoted ``Model`` as a version in the model registry (or record its promotion)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def register(
    model: Input[Model],
    evaluation: Input[Metrics],
    registered: Output[Artifact],
    pipeline_run_id: str = "",
    pipeline_run_name: str = "",
):
    """Registers a model that passed the promotion gate, in the registry the step's environment names.

    The registry and how to reach it are not parameters: ``KFP_TORCH_REGISTRY`` (``none``, ``mlflow``,
    ``kubeflow``), ``KFP_TORCH_REGISTRY_URL``, ``KFP_TORCH_REGISTRY_MODEL_NAME`` and the credentials in a
    Secret mounted at ``KFP_TORCH_REGISTRY_CREDENTIALS_DIR`` (see ``components/register/README.md``).

    Args:
        model: the promoted model (from ``train``): its URI is registered, its ``spec.json`` gives the
            architecture, classes, the dataset's repository, commit and DVC md5, and the training parameters.
        evaluation: its evaluation (``evaluate``'s ``metrics``): the scores, ``promote`` and ``reason``.
        registered: the registered version. Metadata: ``registry``, ``registry_url``, ``model_name``,
            ``version``, ``version_id``, ``model_uri``, ``registered_model_id``, ``run_id`` (what ``deploy``
            and the report read). Files: ``registration.json`` (the version and every property registered);
            without a registry, ``promotion.json`` (model URI, architecture, classes, dataset, library
            version, test metrics, time of promotion).
        pipeline_run_id: the pipeline run's id (pass ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``); it names the
            Kubeflow registry's version, so a retry finds the version its first attempt made.
        pipeline_run_name: the pipeline run's name (pass ``dsl.PIPELINE_JOB_NAME_PLACEHOLDER``).
    """
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # before any client's

    from components.register.register import register_model

    version = register_model(
        model_dir=model.path,
        model_uri=model.uri,
        evaluation=evaluation.metadata,
        output_dir=registered.path,
        run_id=pipeline_run_id,
        run_name=pipeline_run_name,
    )
    registered.metadata.update(version.metadata())
    if version.registry == "none":  # the promotion record's URI and time, as metadata too
        import json
        from pathlib import Path

        record = json.loads((Path(registered.path) / "promotion.json").read_text())
        registered.metadata.update({"model_uri": record["model_uri"], "promoted_at": record["promoted_at"]})
    print(f"registered {version.describe()}")
