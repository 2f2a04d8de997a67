"""KFP component: the run report, as HTML and Markdown that the Kubeflow UI renders."""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def report(
    comparison: Input[Artifact],
    worst_images: Input[Artifact],
    html: Output[HTML],
    markdown: Output[Markdown],
    bento: Optional[Input[Artifact]] = None,
    registration: Optional[Input[Artifact]] = None,
    deployment: Optional[Input[Artifact]] = None,
    image: str = "",
    worst_count: int = 12,
):
    """Writes the run report: is this model better than the one in production, and why?

    The decision and its reason first; the scores against the baseline (accuracy, macro F1,
    recall per class, changed ones first with their direction; the shared classes only when
    the classes differ); what changed in the inputs (training parameters, dataset); pictures
    (training curves over the baseline's, the confusion matrix, the worst-classified test
    images); and the lineage (model tag, registered version, ONNX parity, image, deployment and
    its verification). An input that is absent is said to be absent.

    Args:
        comparison: evaluate's ``comparison`` artifact (the decision, both models' scores on the
            same test files, how each was made).
        worst_images: evaluate's ``worst_images`` artifact (pictures of the worst-classified
            test images with what was predicted).
        html: the report as one self-contained HTML page (inline CSS, pictures as ``data:``
            URIs, no script, no request elsewhere), shown by the Kubeflow UI.
        markdown: the report as Markdown without HTML, for the Kubeflow UI's Markdown viewer (the
            first 400,000 characters) and a pull-request comment; the pictures come last, as
            ``data:`` URIs, and only while they fit.
        bento: optional, ``build_bento``'s artifact; its metadata gives the model tag
            (``model_tag``, ``bento_tag``).
        registration: optional, the registered version: metadata (or a JSON object in its file)
            with ``registry``, ``model_name``, ``version``, ``uri``.
        deployment: optional, the deployment: metadata (or a JSON object in its file) with
            ``url``, ``image``, ``previous_image``, ``rolled_back``, ``model_tag`` and
            ``verification`` (``images``, ``agreed``, ``p50_ms``, ``p99_ms``).
        image: optional, the container image built in this run (``repository@sha256:...``).
        worst_count: how many of the worst-classified test images to show (at most the 16 that
            evaluate keeps).
    """
    from components.report.step import write_report

    def fields(artifact):
        from components.report.content import artifact_fields

        return artifact_fields(artifact.path, artifact.metadata) if artifact is not None else None

    write_report(
        comparison.path,
        worst_images.path,
        html.path,
        markdown.path,
        bento=fields(bento),
        registration=fields(registration),
        deployment=fields(deployment),
        image=image,
        worst_count=worst_count,
    )
