"""Promote a verified image to production: a canary beside what serves, verified, then all traffic or rolled back.

The image is one a training run deployed to staging and verified there: its deploy step's ``deployment`` artifact
(given by URI) says which image it verified and holds the held-out images and evaluate's answers for them, so the
canary is verified with exactly those. The pipeline refuses any other image.

    deploy canary (canary_percent of the traffic, verified) ──► promote canary (100 %, verified; marked as serving
                                                                 in production in the model registry)

A canary that fails its rollout or verification is removed and the run fails naming why; production is untouched.
A promotion that fails verification goes back to the previous stable revision. With ``canary_percent`` -1 the image
is deployed and verified directly: the first production deployment, with nothing serving yet for a canary to stand
beside.
"""

from kfp import dsl

from components.deploy.component import deploy
from pipelines.kubernetes_settings import ClusterSettings, configure_step

PIPELINE_NAME = "pytorch-promote"


def build_promote_pipeline(settings: ClusterSettings | None = None):
    """The promote pipeline with ``settings`` (compile-time Kubernetes and deploy settings) applied to its steps."""
    settings = settings or ClusterSettings()
    settings.validate()
    serving = settings.deploy.arguments()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Promote a serving image that a training run verified in staging to production: deploy it as a "
        "canary beside the revision serving now, verify the canary with the same held-out test images, then move all "
        "traffic to it (verified again, marked in the model registry) or roll it back.",
    )
    def promote_pipeline(
        image: str,
        namespace: str,
        verified_deployment: str,
        target: str = "kserve",
        name: str = "image-classifier",
        canary_percent: int = 10,
    ):
        """Promotes a verified image to production through a canary.

        Args:
            image: the serving image by digest (``repository@sha256:<64 hex>``), as the training run deployed and
                verified it in staging.
            namespace: the production namespace.
            verified_deployment: the URI of the training run's deploy step output (its ``deployment`` artifact,
                shown in the run's graph in the Kubeflow UI), which verified ``image``: its held-out images and
                evaluate's answers verify the canary, and its registered version is the one marked as serving.
            target: ``kserve`` (canaryTrafficPercent; KServe's knative mode) or ``deployment`` (a second
                Deployment behind the same Service, weighted by replicas).
            name: the production service's name (a DNS-1035 label).
            canary_percent: the share of the traffic the canary gets, 0 to 100; -1 deploys the image directly
                (the first production deployment, with nothing serving to compare with).
        """
        verified = dsl.importer(artifact_uri=verified_deployment, artifact_class=dsl.Artifact, reimport=False)
        verified.set_display_name("verified deployment")
        common = {
            "target": target,
            "namespace": namespace,
            "name": name,
            "image": image,
            "verified_deployment": verified.output,
            "pipeline_run": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **serving,
        }
        with dsl.If(canary_percent == -1, name="directly"):
            direct = deploy(production=True, **common)
            configure_step(direct.set_display_name("deploy to production"), "deploy", settings)
        with dsl.Else(name="through-a-canary"):
            canary = deploy(canary_percent=canary_percent, **common)
            configure_step(canary.set_display_name("deploy canary"), "deploy", settings)
            promoted = deploy(promote=True, production=True, **common).after(canary)
            configure_step(promoted.set_display_name("promote canary"), "deploy", settings)

    return promote_pipeline


promote_pipeline = build_promote_pipeline()
