"""The training pipelines' parameters, described once: the pipelines' docstrings and ``check_arguments``' (which
takes them all) come from here, and so does ``kfp-torch local --help``.

A parameter the pipeline passes on to a component input has that input's description (the training options are
``TrainConfig``'s, the distributed job's settings ``distributed_train``'s); what only the pipeline means by a
parameter (where the data is, the serving image, where a promoted model goes, the train step's placement) is
described here.
"""

from __future__ import annotations

from components.check_arguments.checks import GPU_NODE_SELECTOR
from components.common.descriptions import field_descriptions, input_descriptions
from components.common.distributed_step import STEP_INPUTS
from components.distributed_train.component import distributed_train
from components.dvc_pull.component import dvc_pull
from components.evaluate.component import evaluate
from components.find_baseline.component import find_baseline
from components.train.config import TrainConfig

_pull = input_descriptions(dvc_pull)
_distributed = input_descriptions(distributed_train)

# What both training pipelines take, described for them and for check_arguments.
PIPELINE_PARAMETERS = {
    "repo_url": _pull["repo_url"],
    "rev": "The data's branch, tag or commit in repo_url. resolve_revision turns it into a commit first (uncached), "
    "so that caching keys on the data's commit, never on a branch name.",
    "data_path": "The DVC-tracked path of the dataset in the repository (dvc_pull's paths), e.g. data/raw: class "
    "folders or labels.csv.",
    "dvc_remote": _pull["remote"],
    "dvc_remote_config": _pull["remote_config"],
    "dvc_jobs": _pull["jobs"],
    **field_descriptions(TrainConfig),
    "pretrained_weights": STEP_INPUTS["pretrained_weights"],
    "accuracy_threshold": input_descriptions(evaluate)["accuracy_threshold"],
    "baseline": "What evaluate compares the new model with: "
    + input_descriptions(find_baseline)["baseline"]
    + " The default is production where the compiled cluster settings name a model registry (a first model, with "
    "none in production yet, is compared with nothing and says so), else none.",
    "image_repository": "Where the serving image goes, e.g. registry.example.com/ml/image-classifier (containerize's "
    "image_repository; the tag is the bento's version). Empty: no image is built, whatever build_image says; the "
    "bento still is.",
    "serving_base_image": "The serving image's base, a Python 3.11 Debian-based image: the bento records it and "
    "containerize builds FROM it (checked only when an image is built).",
    "build_image": "Build the serving image from the bento (containerize, with buildah) when the model is "
    "promoted. It takes an image_repository too: true (the default) beside an empty image_repository builds no "
    "image. False: the bento only.",
    "push_image": "Push the serving image to image_repository (a cluster deployment pulls it, so deploy_namespace "
    "needs it); false keeps it in the step's local buildah storage.",
    "deploy_target": "Where a promoted model is deployed and verified: kserve (an InferenceService) or deployment "
    "(a Deployment, a Service and a HorizontalPodAutoscaler), both in deploy_namespace with the image built and "
    "pushed; or local (bentoml serve on the machine running the step, stopped after the verification: what "
    "kfp.local and make run use).",
    "deploy_namespace": "The namespace the cluster targets deploy to (staging); empty deploys nothing to a cluster. "
    "Target local takes none.",
}

# Where the training pipeline's single train step runs (the distributed pipeline's pods: DISTRIBUTED_PARAMETERS).
TRAIN_STEP_PLACEMENT = {
    "gpus": "GPUs for the train step (default 1). With 0 the step trains on CPU, and the GPU node_selector and "
    "tolerations defaults are dropped so that a CPU-only cluster can schedule it (your own are kept). The "
    "distributed pipeline counts GPUs per pod and defaults to 0.",
    "accelerator_type": _distributed["accelerator_type"],
    "node_selector": "Node labels the train step must run on; the default, "
    + ", ".join(f"{key}={value}" for key, value in GPU_NODE_SELECTOR.items())
    + ", is the label NVIDIA's GPU feature discovery sets (dropped with gpus 0).",
    "tolerations": "Tolerations of the train step, as Kubernetes writes them; the default tolerates the "
    "nvidia.com/gpu taint (dropped with gpus 0).",
}

# The distributed pipeline's job settings: distributed_train's, with the defaults that differ from the training
# pipeline's explained.
DISTRIBUTED_PARAMETERS = {
    **{name: text for name, text in _distributed.items() if name not in TrainConfig.__dataclass_fields__},
    "gpus": _distributed["gpus"] + " The default, 0, runs on any node; the training pipeline's single train step "
    "defaults to 1.",
    "node_selector": _distributed["node_selector"]
    + " Unlike the training pipeline, nothing is added for GPUs: with gpus, name your GPU nodes here.",
    "tolerations": _distributed["tolerations"] + " With gpus, add your GPU nodes' taints here.",
}
