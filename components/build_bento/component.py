"""KFP component: package a promoted ``Model`` as a BentoML bento archive."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def build_bento(
    model: Input[Model],
    evaluation: Input[Metrics],
    bento: Output[Artifact],
    base_image: str = "",
    accelerator: str = "cpu",
):
    """Imports the model into a BentoML model store and builds a bento from ``serving/``.

    Args:
        model: the trained model (``weights.pt`` + ``spec.json``).
        evaluation: its evaluation metrics; stored as the BentoML model's metadata and
            shown by the service's ``/model_info``.
        bento: a directory holding the exported ``<name>-<version>.tar`` archive and
            ``bento.json``. Metadata: ``bento_tag``, ``model_tag``, ``size_bytes``.
        base_image: the bento's container base image (empty: BentoML's default).
        accelerator: ``cpu`` (ONNX Runtime, no torch, no CUDA wheels) or ``cuda`` (adds the CUDA
            build of torch and its CUDA runtime wheels). Requirements are pinned from this step's
            own environment; the build needs no network.
    """
    from components.build_bento.packaging import build_bento_archive
    from components.build_bento.requirements import validate_accelerator

    validate_accelerator(accelerator)

    scores = {k: v for k, v in evaluation.metadata.items() if isinstance(v, (int, float, str, bool))}
    descriptor = build_bento_archive(
        model.path, bento.path, evaluation=scores, base_image=base_image, accelerator=accelerator
    )
    keys = ("bento_tag", "model_tag", "size_bytes", "archive", "accelerator")
    bento.metadata.update({k: descriptor[k] for k in keys})
    print(
        f"built bento {descriptor['bento_tag']} ({descriptor['size_bytes']} bytes) with model {descriptor['model_tag']}"
    )
