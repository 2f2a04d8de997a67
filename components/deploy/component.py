"""KFP component: deploy a verified model to KServe, a Deployment or this machine, verify what is served, roll back
on failure."""

from typing import List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def deploy(
    deployment: Output[Artifact],
    target: str = "kserve",
    namespace: str = "",
    name: str = "image-classifier",
    image: str = "",
    bento: Optional[Input[Artifact]] = None,
    model: Optional[Input[Model]] = None,
    dataset: Optional[Input[Dataset]] = None,
    predictions: Optional[Input[Artifact]] = None,
    evaluation: Optional[Input[Metrics]] = None,
    registered: Optional[Input[Artifact]] = None,
    verified_deployment: Optional[Input[Artifact]] = None,
    production: bool = False,
    canary_percent: int = -1,
    promote: bool = False,
    verify_images: int = 64,
    verify_timeout_seconds: float = 30.0,
    deadline_seconds: int = 600,
    keep_failed: bool = False,
    fail_on_rollback: bool = True,
    min_replicas: int = 1,
    max_replicas: int = 3,
    scale_metric: str = "cpu",
    scale_target: int = 80,
    cpu: str = "500m",
    memory: str = "1Gi",
    cpu_limit: str = "2",
    memory_limit: str = "2Gi",
    service_account: str = "",
    image_pull_secrets: List[str] = [],  # noqa: B006 (KFP reads the default from the signature)
    kserve_mode: str = "standard",
    kserve_version: str = "0.20",
    pipeline_run: str = "",
) -> NamedTuple("DeployOutputs", [("url", str), ("image", str), ("previous_image", str), ("rolled_back", bool)]):
    """Deploys the model, waits for the rollout, verifies what the new revision serves, and rolls back on failure.

    The new revision is verified with held-out test images sent through BentoML's client: every answer must be
    200, each served prediction must equal evaluate's for the same file, and the served accuracy on them must equal
    evaluate's. On a failed rollout or verification the previous revision serves again (a first deployment is
    removed unless ``keep_failed``) and the step fails naming the cause.

    Args:
        deployment: the output: ``deployment.json`` (``url``, ``image``, ``previous_image``, ``rolled_back``,
            ``changed``, ``verification`` with ``images``, ``agreed``, ``answered_200``, ``served_accuracy``,
            ``evaluated_accuracy``, ``p50_ms``, ``p99_ms``, the disagreements), ``manifests.yaml`` (what was
            applied) and ``held_out/`` (the images verified with, and evaluate's answers: what
            ``promote_pipeline`` verifies the canary with). Metadata (what the report reads): ``url``,
            ``image``, ``previous_image``, ``rolled_back``, ``changed``, ``model_tag``, ``target`` and
            ``verification`` (``images``, ``agreed``, ``answered_200``, ``served_accuracy``,
            ``evaluated_accuracy``, ``p50_ms``, ``p99_ms``, ``passed``).
        target: ``kserve`` (a KServe InferenceService), ``deployment`` (a Deployment, a Service and a
            HorizontalPodAutoscaler) or ``local`` (``bentoml serve`` on this machine, stopped after the
            verification; ``make serve`` serves what was deployed).
        namespace: the Kubernetes namespace to serve in (the cluster targets; "" for local).
        name: the service's name, a DNS-1035 label (the InferenceService, the Deployment and Service, or the
            local deployment's folder).
        image: the serving image by digest, ``repository@sha256:<64 hex>`` (``containerize``'s output), for the
            cluster targets; a tag is refused.
        bento: ``build_bento``'s output: the archive that ``local`` serves; for every target, its model tag is
            the one the service must report and a label.
        model: the deployed model (``train``'s): its split rule picks the held-out test images, its
            ``spec.json`` gives the dataset commit for the labels.
        dataset: the dataset the model was trained and evaluated on.
        predictions: evaluate's per-image predictions, which the served answers must equal.
        evaluation: evaluate's metrics: a model evaluate did not promote is refused.
        registered: the ``register`` step's version: after a verified deploy, the image is recorded on it, and
            with ``production`` it is marked as serving in production. Unconnected: no registry is told.
        verified_deployment: instead of model, dataset and predictions: a deploy step's output that verified this
            ``image`` (the staging deployment); its held-out images and answers verify this deployment, and its
            registered version is the one marked.
        production: mark the registered version as serving in production after a verified deploy.
        canary_percent: -1 for a normal deployment; 0 to 100: serve the image as a canary on that share of the
            traffic beside the revision serving now, and verify the canary.
        promote: move all traffic to the canary of ``image`` (served before with ``canary_percent``), verify
            it, and roll back to the previous stable revision on failure.
        verify_images: how many held-out test images to verify with (at least 1).
        verify_timeout_seconds: how long one verification request may take.
        deadline_seconds: how long the rollout (and, afresh, a rollback) may take.
        keep_failed: keep a failed first deployment for debugging instead of removing it.
        fail_on_rollback: true: a deployment that was rolled back fails the step; false: the step ends with
            ``rolled_back`` true and the cause in ``deployment.json``, so later steps run.
        min_replicas: the fewest replicas serving.
        max_replicas: the most replicas the autoscaler may run.
        scale_metric: what the autoscaler scales on: ``cpu`` or ``memory`` (utilisation; ``deployment`` and
            KServe's standard mode), ``concurrency`` or ``rps`` (KServe's knative mode).
        scale_target: the metric's target value per replica (percent for cpu and memory).
        cpu: each replica's CPU request.
        memory: each replica's memory request.
        cpu_limit: each replica's CPU limit.
        memory_limit: each replica's memory limit.
        service_account: the ServiceAccount the serving pods run as ("" for the namespace's default).
        image_pull_secrets: names of Secrets in the namespace for pulling the image (names, never contents).
        kserve_mode: KServe's deployment mode, ``standard`` (RawDeployment) or ``knative`` (Serverless); sent
            under the name the cluster's KServe version knows.
        kserve_version: the cluster's KServe release, e.g. ``0.20`` (0.17 renamed the modes).
        pipeline_run: the pipeline run's id (pass ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), a label on what is deployed.

    Returns:
        url: Where the service answers (the in-cluster URL; for ``local``, ``make serve``'s address); "" when
            rolled back.
        image: The deployed image (for ``local``, the bento's tag).
        previous_image: What served before ("" for a first deployment).
        rolled_back: Whether it was rolled back (only with ``fail_on_rollback`` false; otherwise the step fails).
    """
    from collections import namedtuple

    from components.deploy.inputs import deploy_request, refuse_unpromoted
    from components.deploy.step import held_out_for, local_bento, read_deployment, run_step
    from components.deploy.verification import FIGURES

    refuse_unpromoted(evaluation.metadata if evaluation is not None else None)
    archive = local_bento(bento.path) if bento is not None else None
    verified = read_deployment(verified_deployment.path) if verified_deployment is not None else {}
    verified_with = held_out_for(
        verify_images,
        dataset.path if dataset is not None else None,
        model.path if model is not None else None,
        predictions.path if predictions is not None else None,
        verified_deployment.path if verified_deployment is not None else None,
        image=image if target != "local" else "",
        model_tag=archive.model_tag if archive is not None else "",
    )
    request = deploy_request(
        target=target,
        name=name,
        namespace=namespace,
        image=image,
        bento=str(archive.path) if archive is not None and target == "local" else "",
        model_tag=verified_with.model_tag,
        dataset_commit=verified_with.dataset_commit or verified.get("dataset_commit", ""),
        pipeline_run=pipeline_run,
        canary_percent=canary_percent,
        promote=promote,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_metric=scale_metric,
        scale_target=scale_target,
        cpu=cpu,
        memory=memory,
        cpu_limit=cpu_limit,
        memory_limit=memory_limit,
        service_account=service_account,
        image_pull_secrets=tuple(image_pull_secrets),
        kserve_mode=kserve_mode,
        kserve_version=kserve_version,
        progress_deadline_seconds=deadline_seconds,
    )
    outcome = run_step(
        request,
        verified_with,
        deployment.path,
        promote=promote,
        production=production,
        registered=registered.metadata if registered is not None else None,
        verify_timeout_seconds=verify_timeout_seconds,
        deadline_seconds=deadline_seconds,
        keep_failed=keep_failed,
        fail_on_rollback=fail_on_rollback,
    )
    record = outcome.record
    verification = record["verification"] or {}
    deployment.metadata.update(  # what the report and the Kubeflow UI read; deployment.json holds it all
        {
            **{key: record[key] for key in ("url", "image", "previous_image", "rolled_back", "changed", "model_tag")},
            "target": target,
            "verification": {key: value for key, value in verification.items() if key in FIGURES},
        }
    )
    outputs = namedtuple("DeployOutputs", ["url", "image", "previous_image", "rolled_back"])
    return outputs(outcome.url, outcome.image, outcome.previous_image, outcome.rolled_back)
