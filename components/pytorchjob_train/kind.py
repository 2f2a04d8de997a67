"""PyTorchJob (``kubeflow.org/v1``, the Training Operator's) as a ``JobKind`` for the launcher core."""

from components.common.kube.kinds import JobKind
from components.pytorchjob_train.manifest import API_VERSION, CONTAINER_NAME, KIND

GROUP, VERSION = API_VERSION.split("/")

PYTORCHJOB = JobKind(
    group=GROUP,
    version=VERSION,
    plural="pytorchjobs",
    kind=KIND,
    succeeded="Succeeded",
    failed="Failed",
    master_selector="training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master",
    pods_selector="training.kubeflow.org/job-name={name}",
    log_container=CONTAINER_NAME,
    controller="the Training Operator",
    install_hint=(
        "Current Kubeflow installs Kubeflow Trainer v2 instead: use launcher=trainjob (a TrainJob) or "
        "launcher=auto (whichever kind the cluster serves), or install the Training Operator v1 (kubeflow/trainer "
        "release-1.9, its manifests/overlays/standalone)"
    ),
)
