"""Kubernetes settings for each pipeline step, chosen at compile time and applied with kfp-kubernetes.

The settings that change from run to run (the training step's GPU count,
accelerator type, node selector and tolerations) are pipeline parameters. The
ones a platform team fixes per cluster live here: resource requests and
limits, retries with backoff, timeouts and caching per step, pod labels, the
``/dev/shm`` size for DataLoader workers, a PVC for the DVC cache, the
Secrets that hold GCS and container registry credentials, the artifact store
(KFP's ``mlpipeline-minio-artifact`` Secret and its S3 endpoint), and the model
registry (which one, where, and the Secret with its credentials). Only Secret
*names*, mount paths and endpoints reach the compiled YAML, never their content.

Write a YAML file with the keys of :class:`ClusterSettings` (``steps`` maps a
step name to the keys of :class:`StepSettings`; what you leave out keeps its
default) and compile with ``kfp-torch compile --settings FILE``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from kfp import dsl, kubernetes

from components.common.kube.values import DNS_1123_LABEL, DNS_1123_SUBDOMAIN, is_label_value, is_resource_quantity
from components.common.storage import S3_CREDENTIALS_DIR_ENV, S3_ENDPOINT_ENV, S3_REGION_ENV
from components.register.settings import (
    DEFAULT_EXPERIMENT,
    DEFAULT_KUBEFLOW_URL,
    DEFAULT_MODEL_NAME,
    DEFAULT_SERVING_ENVIRONMENT,
    REGISTRIES,
    RegistrySettings,
    RegistrySettingsError,
)
from components.trainjob_train.manifest import DEFAULT_RUNTIME, RUNTIME_KINDS, TRAINER_RELEASES
from pipelines.deploy_settings import DeploySettings, DeploySettingsError

STEPS = (
    "check-arguments",
    "resolve-revision",
    "dvc-pull",
    "train",
    "distributed-train",
    "find-baseline",
    "evaluate",
    "register",
    "build-bento",
    "containerize",
    "report",
    "deploy",
)
# The distributed training step's earlier name, still accepted in settings files written for it.
STEP_ALIASES = {"pytorchjob-train": "distributed-train"}
# Steps that read gs:// themselves (the DVC remote; the distributed job's pods read the dataset by URI;
# find-baseline fetches the baseline model by its URI).
GCS_STEPS = ("dvc-pull", "distributed-train", "find-baseline")
# Steps whose own code reads or writes artifacts by URI (KFP's launcher moves the others' files): the
# distributed step reads the model its job's pods wrote, and they read the dataset and write the model;
# find-baseline copies the production model from the URI the registry holds.
ARTIFACT_STORE_STEPS = ("distributed-train", "find-baseline")
# Steps that talk to the model registry: they get its settings as environment variables and its Secret (deploy
# records the image on the registered version and marks the version that serves).
REGISTRY_STEPS = ("find-baseline", "register", "deploy")
# Steps whose result must reflect the world as it is now, never a cached one: the branch's commit; the
# version the registry says serves in production (a cached one would compare with a model that no longer
# serves; find-baseline's output is a new artifact in every run, so evaluate and the report run anew too); what
# serves (a cached deploy would skip the deployment it stands for).
UNCACHED_STEPS = ("resolve-revision", "find-baseline", "deploy")
UNCACHED_BECAUSE = {
    "resolve-revision": "a cached resolve-revision would serve an old commit after the branch moved",
    "find-baseline": "a cached find-baseline would compare with a version that may no longer serve in production",
    "deploy": "a cached deploy would skip the deployment it stands for",
}
DURATION_UNITS = ("s", "m", "h")


class SettingsError(ValueError):
    """A cluster setting that cannot make valid pods."""


@dataclass(frozen=True)
class StepSettings:
    """What one step's pod asks for, and how KFP retries, times out and caches it ('' or 0: unset)."""

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    retries: int = 0
    backoff_duration: str = "30s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "1h"
    timeout_seconds: int = 0
    caching: bool = True


# KFP retries a failed step whatever failed, so only the steps a lost pod can fail are retried by it:
# the others retry the system's errors themselves (git and object-store reads, the registry push)
# and fail at once on the user's (a wrong path, revision or parameter), which no retry can mend.
DEFAULT_STEPS = {
    "check-arguments": StepSettings("100m", "1", "512Mi", "1Gi", timeout_seconds=300),
    "resolve-revision": StepSettings("100m", "500m", "128Mi", "256Mi", timeout_seconds=300, caching=False),
    "dvc-pull": StepSettings("1", "2", "2Gi", "4Gi", timeout_seconds=7200),
    # A preempted GPU node loses the pod; the retry resumes from the last epoch's checkpoint.
    "train": StepSettings("4", "8", "16Gi", "32Gi", retries=1, timeout_seconds=86400),
    # The launcher pod only creates and follows the job (which has its own timeout); a retry re-attaches.
    "distributed-train": StepSettings("250m", "1", "512Mi", "2Gi", retries=2, timeout_seconds=90000),
    # Fetches the production model (weights and ONNX export) by URI; retries the registry's errors itself.
    "find-baseline": StepSettings("250m", "1", "512Mi", "2Gi", timeout_seconds=1800, caching=False),
    "evaluate": StepSettings("2", "4", "4Gi", "8Gi", timeout_seconds=3600),
    # A few registry calls; a retried step registers nothing twice (see components/register/README.md).
    # Uncached: a cached register would skip the registration it stands for.
    "register": StepSettings("100m", "500m", "256Mi", "512Mi", timeout_seconds=600, caching=False),
    "build-bento": StepSettings("1", "2", "2Gi", "4Gi", timeout_seconds=1800),
    "containerize": StepSettings("2", "4", "4Gi", "8Gi", timeout_seconds=7200),
    # Draws the pictures with Pillow from evaluate's comparison and worst images: small and quick.
    "report": StepSettings("250m", "1", "512Mi", "1Gi", timeout_seconds=900),
    # Talks to the cluster and sends the verification images (target local: serves the bento itself). Never
    # retried by KFP: a failed deployment was rolled back, and trying the same again would fail the same way.
    "deploy": StepSettings("250m", "1", "512Mi", "2Gi", timeout_seconds=3600, caching=False),
}


@dataclass(frozen=True)
class ClusterSettings:
    """Compile-time settings for a Kubeflow cluster."""

    steps: dict[str, StepSettings] = field(default_factory=lambda: dict(DEFAULT_STEPS))
    # Extra labels on every step's pod, beside app.kubernetes.io/part-of and kfp-torch-lifecycle/step.
    pod_labels: dict[str, str] = field(default_factory=dict)
    # The training step's /dev/shm: an emptyDir in memory, so DataLoader workers can share batches. "" for none.
    shm_size: str = "2Gi"
    # A PersistentVolumeClaim holding a DVC cache shared across runs; "" for a throwaway cache per run.
    dvc_cache_pvc: str = ""
    dvc_cache_mount_path: str = "/mnt/dvc-cache"
    # A Secret with a GCS service-account key; "" when the pods use Workload Identity.
    gcs_credentials_secret: str = ""
    gcs_credentials_key: str = "key.json"
    gcs_credentials_mount_path: str = "/var/secrets/gcs"
    # A kubernetes.io/dockerconfigjson Secret for pushing the serving image; "" for none.
    registry_secret: str = ""
    registry_mount_path: str = "/var/secrets/registry"
    # The artifact store, for the steps that read and write artifacts by URI (ARTIFACT_STORE_STEPS and the
    # distributed job's pods) when the pipeline root is minio:// or s3://. The Secret is KFP's own (keys
    # accesskey and secretkey; a standard install has it in every profile namespace); it is mounted
    # optionally, so a gs:// root or pods with their own credentials (IRSA) need nothing. "" for none.
    artifact_store_secret: str = "mlpipeline-minio-artifact"
    artifact_store_mount_path: str = "/var/secrets/artifact-store"
    # The S3 API's URL and region; "" for the standard install's MinIO (minio-service.kubeflow:9000) for
    # minio:// and for AWS's own for s3://.
    artifact_store_endpoint: str = ""
    artifact_store_region: str = ""
    # The model registry that find-baseline asks which version serves in production and register records
    # promoted models in (components/register/README.md): none, mlflow or kubeflow. With one set, the
    # pipelines' baseline parameter defaults to production, else to none.
    model_registry: str = "none"
    # The registry's http(s) address ("" for kubeflow: the in-cluster Model Registry service).
    model_registry_url: str = ""
    model_registry_model_name: str = DEFAULT_MODEL_NAME
    # A Secret with the registry's credentials (keys token, or username and password), mounted as files
    # into the steps that talk to the registry; "" for none (the Kubeflow registry then gets the pod's
    # ServiceAccount token).
    model_registry_credentials_secret: str = ""
    model_registry_credentials_mount_path: str = "/var/secrets/model-registry"
    # A CA bundle inside the pod for an https registry signed by a private CA, e.g. a ca.crt key of the
    # credentials Secret: /var/secrets/model-registry/ca.crt. "" for the system's CAs.
    model_registry_ca_file: str = ""
    # kubeflow: the ServingEnvironment whose deployed InferenceService is production.
    model_registry_serving_environment: str = DEFAULT_SERVING_ENVIRONMENT
    # mlflow: the experiment holding each registration's run.
    model_registry_experiment: str = DEFAULT_EXPERIMENT

    @property
    def registry_settings(self) -> RegistrySettings:
        """The model registry settings the registry steps get, as ``components/register`` reads them."""
        url = self.model_registry_url or (DEFAULT_KUBEFLOW_URL if self.model_registry == "kubeflow" else "")
        mounted = self.model_registry_credentials_mount_path if self.model_registry_credentials_secret else ""
        return RegistrySettings(
            registry=self.model_registry,
            url=url.rstrip("/"),
            model_name=self.model_registry_model_name,
            credentials_dir=mounted,
            ca_file=self.model_registry_ca_file,
            serving_environment=self.model_registry_serving_environment,
            experiment=self.model_registry_experiment,
        )

    @property
    def registry_environment(self) -> dict[str, str]:
        """The registry steps' environment: which registry, where, where its Secret is; never a credential."""
        return self.registry_settings.environment()

    @property
    def default_baseline(self) -> str:
        """The pipelines' ``baseline`` default: what serves in production where a registry knows it."""
        return "production" if self.model_registry != "none" else "none"

    # Kubeflow Trainer, for the distributed step's TrainJobs: the release the cluster runs (it decides the field that
    # carries placement and mounts), and the training runtime they refer to: a ClusterTrainingRuntime, or a
    # TrainingRuntime in the namespace where the jobs run.
    trainer_release: str = TRAINER_RELEASES[0]
    trainjob_runtime: str = DEFAULT_RUNTIME
    trainjob_runtime_kind: str = RUNTIME_KINDS[0]
    # The deploy step's serving pods: ServiceAccount, image pull Secret names, KServe version and mode, capacity.
    deploy: DeploySettings = field(default_factory=DeploySettings)

    @property
    def gcs_credentials_path(self) -> str:
        return f"{self.gcs_credentials_mount_path.rstrip('/')}/{self.gcs_credentials_key}"

    @property
    def gcs_secret_volumes(self) -> dict[str, str]:
        """The GCS key Secret and where it is mounted ({} with Workload Identity)."""
        return {self.gcs_credentials_secret: self.gcs_credentials_mount_path} if self.gcs_credentials_secret else {}

    @property
    def gcs_environment(self) -> dict[str, str]:
        """What points Google's client libraries at the mounted key ({} with Workload Identity)."""
        return {"GOOGLE_APPLICATION_CREDENTIALS": self.gcs_credentials_path} if self.gcs_credentials_secret else {}

    @property
    def artifact_store_environment(self) -> dict[str, str]:
        """Where storage.py finds the artifact store: the mounted Secret's directory, the endpoint and region."""
        environment = {S3_CREDENTIALS_DIR_ENV: self.artifact_store_mount_path} if self.artifact_store_secret else {}
        if self.artifact_store_endpoint:
            environment[S3_ENDPOINT_ENV] = self.artifact_store_endpoint
        if self.artifact_store_region:
            environment[S3_REGION_ENV] = self.artifact_store_region
        return environment

    @property
    def artifact_store_secret_volumes(self) -> dict[str, str]:
        return {self.artifact_store_secret: self.artifact_store_mount_path} if self.artifact_store_secret else {}

    @property
    def replica_environment(self) -> dict[str, str]:
        """The distributed job's pods' environment: GCS credentials and the artifact store, no secret values."""
        return {**self.gcs_environment, **self.artifact_store_environment}

    @property
    def registry_auth_file(self) -> str:
        return f"{self.registry_mount_path.rstrip('/')}/.dockerconfigjson" if self.registry_secret else ""

    @property
    def dvc_cache_dir(self) -> str:
        return self.dvc_cache_mount_path if self.dvc_cache_pvc else ""

    def validate(self) -> None:
        unknown = sorted(set(self.steps) - set(STEPS))
        if unknown:
            raise SettingsError(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEPS)}")
        for step, settings in self.steps.items():
            _validate_step(step, settings)
        for key, value in self.pod_labels.items():
            prefix, slash, name = key.rpartition("/")
            if not (name and is_label_value(name)) or (slash and not DNS_1123_SUBDOMAIN.match(prefix)):
                raise SettingsError(f"pod label key {key!r} is not a valid Kubernetes label key")
            if not is_label_value(value):
                raise SettingsError(
                    f"pod label {key}={value!r}: a value is up to 63 letters, digits, '-', '_' or '.', "
                    "starting and ending with a letter or digit"
                )
        if self.shm_size and not is_resource_quantity(self.shm_size):
            raise SettingsError(f"shm_size must be a quantity like '2Gi', or '' for none, got {self.shm_size!r}")
        for what in (
            "dvc_cache_pvc",
            "gcs_credentials_secret",
            "registry_secret",
            "artifact_store_secret",
            "model_registry_credentials_secret",
        ):
            name = getattr(self, what)
            if name and not (len(name) <= 253 and DNS_1123_SUBDOMAIN.match(name)):
                raise SettingsError(f"{what} {name!r} is not a valid Kubernetes object name")
        for what in (
            "dvc_cache_mount_path",
            "gcs_credentials_mount_path",
            "registry_mount_path",
            "artifact_store_mount_path",
            "model_registry_credentials_mount_path",
        ):
            if not getattr(self, what).startswith("/"):
                raise SettingsError(f"{what} must be an absolute path, got {getattr(self, what)!r}")
        if self.artifact_store_secret and self.artifact_store_mount_path == self.gcs_credentials_mount_path:
            raise SettingsError("artifact_store_mount_path and gcs_credentials_mount_path must differ")
        endpoint = urlparse(self.artifact_store_endpoint)
        if self.artifact_store_endpoint and (
            endpoint.scheme not in ("http", "https") or not endpoint.hostname or endpoint.username or endpoint.password
        ):
            raise SettingsError(
                f"artifact_store_endpoint must be an http(s) URL without credentials, such as "
                f"http://minio-service.kubeflow:9000, got {self.artifact_store_endpoint!r}"
            )
        if self.artifact_store_region and not re.fullmatch(r"[a-z0-9-]{1,64}", self.artifact_store_region):
            raise SettingsError(
                "artifact_store_region must be a region name such as us-east-1 or minio, "
                f"got {self.artifact_store_region!r}"
            )
        if self.trainer_release not in TRAINER_RELEASES:
            raise SettingsError(
                f"trainer_release must be one of {', '.join(TRAINER_RELEASES)} (the Kubeflow Trainer release the "
                f"cluster runs), got {self.trainer_release!r}"
            )
        if not (isinstance(self.trainjob_runtime, str) and DNS_1123_LABEL.match(self.trainjob_runtime)):
            raise SettingsError(f"trainjob_runtime must be a runtime's name such as torch-distributed, got "
                                f"{self.trainjob_runtime!r}")  # fmt: skip
        if self.trainjob_runtime_kind not in RUNTIME_KINDS:
            raise SettingsError(
                f"trainjob_runtime_kind must be one of {', '.join(RUNTIME_KINDS)}, got {self.trainjob_runtime_kind!r}"
            )
        if "/" in self.gcs_credentials_key or not self.gcs_credentials_key:
            raise SettingsError(f"gcs_credentials_key must be a key of the Secret, got {self.gcs_credentials_key!r}")
        self._validate_model_registry()
        try:
            self.deploy.validate()
        except DeploySettingsError as error:
            raise SettingsError(str(error)) from None

    def _validate_model_registry(self) -> None:
        if self.model_registry not in REGISTRIES:
            raise SettingsError(f"model_registry must be one of {', '.join(REGISTRIES)}, got {self.model_registry!r}")
        if self.model_registry_ca_file and not self.model_registry_ca_file.startswith("/"):
            raise SettingsError(
                f"model_registry_ca_file must be an absolute path inside the pod, got {self.model_registry_ca_file!r}"
            )
        mounts = {self.gcs_credentials_mount_path, self.artifact_store_mount_path, self.registry_mount_path}
        if self.model_registry_credentials_secret and self.model_registry_credentials_mount_path in mounts:
            raise SettingsError("model_registry_credentials_mount_path must differ from the other Secrets' mount paths")
        settings = self.registry_settings
        try:  # the CA file is a path in the pod: it exists there, not where the pipeline is compiled
            dataclasses.replace(settings, ca_file="").validate()
        except RegistrySettingsError as error:
            raise SettingsError(f"model registry: {_setting_names(str(error))}") from None


def _setting_names(message: str) -> str:
    """A message of ``components.register.settings`` with its variable names spelled as these settings' keys."""
    from components.register import settings as registry

    names = {
        registry.REGISTRY_ENV: "model_registry",
        registry.URL_ENV: "model_registry_url",
        registry.MODEL_NAME_ENV: "model_registry_model_name",
        registry.CREDENTIALS_DIR_ENV: "model_registry_credentials_secret",
    }
    for variable in sorted(names, key=len, reverse=True):
        message = re.sub(rf"\b{variable}\b", names[variable], message)
    return message


def _validate_step(step: str, settings: StepSettings) -> None:
    for what in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        value = getattr(settings, what)
        if value and not is_resource_quantity(value):
            raise SettingsError(
                f"steps.{step}.{what} must be a Kubernetes quantity like '2', '500m', '8Gi', got {value!r}"
            )
    if not isinstance(settings.retries, int) or settings.retries < 0:
        raise SettingsError(f"steps.{step}.retries must be an integer >= 0, got {settings.retries!r}")
    for what in ("backoff_duration", "backoff_max_duration"):
        value = getattr(settings, what)
        if not (isinstance(value, str) and value[-1:] in DURATION_UNITS and value[:-1].isdigit()):
            raise SettingsError(f"steps.{step}.{what} must be a duration like '30s', '5m' or '1h', got {value!r}")
    if not isinstance(settings.backoff_factor, (int, float)) or settings.backoff_factor < 1:
        raise SettingsError(f"steps.{step}.backoff_factor must be a number >= 1, got {settings.backoff_factor!r}")
    if not isinstance(settings.timeout_seconds, int) or settings.timeout_seconds < 0:
        raise SettingsError(
            f"steps.{step}.timeout_seconds must be an integer >= 0 (0: none), got {settings.timeout_seconds!r}"
        )
    if not isinstance(settings.caching, bool):
        raise SettingsError(f"steps.{step}.caching must be true or false, got {settings.caching!r}")
    if settings.caching and step in UNCACHED_STEPS:
        raise SettingsError(f"steps.{step}.caching cannot be true: {UNCACHED_BECAUSE[step]}")


def settings_from_dict(data: dict[str, Any]) -> ClusterSettings:
    """Settings from a mapping (a parsed YAML file); keys left out keep their defaults."""
    if not isinstance(data, dict):
        raise SettingsError(f"cluster settings must be a mapping of setting names, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(ClusterSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(sorted(known))}")
    steps = dict(DEFAULT_STEPS)
    step_fields = {f.name for f in dataclasses.fields(StepSettings)}
    for step, overrides in (data.get("steps") or {}).items():
        step = STEP_ALIASES.get(step, step)
        if step not in STEPS:
            raise SettingsError(f"unknown step {step!r}; the steps are {', '.join(STEPS)}")
        if not isinstance(overrides, dict) or set(overrides) - step_fields:
            bad = sorted(set(overrides) - step_fields) if isinstance(overrides, dict) else overrides
            raise SettingsError(f"steps.{step}: unknown setting(s) {bad}; valid: {', '.join(sorted(step_fields))}")
        steps[step] = dataclasses.replace(steps[step], **overrides)
    try:
        deploy = DeploySettings.from_dict(data.get("deploy") or {})
    except (DeploySettingsError, TypeError) as error:
        raise SettingsError(str(error)) from None
    rest = {k: v for k, v in data.items() if k not in ("steps", "deploy")}
    settings = ClusterSettings(**rest, steps=steps, deploy=deploy)
    settings.validate()
    return settings


def load_settings(path: str | Path | None) -> ClusterSettings:
    """Settings from a YAML file, or the defaults when ``path`` is None."""
    if path is None:
        return ClusterSettings()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"cannot read cluster settings from {path}: {error}") from error
    try:
        return settings_from_dict(data)
    except TypeError as error:
        raise SettingsError(f"{path}: {error}") from error


def configure_step(task: dsl.PipelineTask, step: str, settings: ClusterSettings) -> dsl.PipelineTask:
    """Apply ``settings`` for ``step`` to ``task``: resources, retries, timeout, caching, labels, Secrets."""
    own = settings.steps[step]
    if own.cpu_request:
        task.set_cpu_request(own.cpu_request)
    if own.cpu_limit:
        task.set_cpu_limit(own.cpu_limit)
    if own.memory_request:
        task.set_memory_request(own.memory_request)
    if own.memory_limit:
        task.set_memory_limit(own.memory_limit)
    if own.retries:
        task.set_retry(
            num_retries=own.retries,
            backoff_duration=own.backoff_duration,
            backoff_factor=own.backoff_factor,
            backoff_max_duration=own.backoff_max_duration,
        )
    if own.timeout_seconds:
        kubernetes.set_timeout(task, own.timeout_seconds)
    task.set_caching_options(enable_caching=own.caching)
    labels = {"app.kubernetes.io/part-of": "kfp-torch-lifecycle", **settings.pod_labels}
    for key, value in sorted(labels.items()):
        kubernetes.add_pod_label(task, key, value)
    kubernetes.add_pod_label(task, "kfp-torch-lifecycle/step", step)
    if step in GCS_STEPS:
        for secret, mount_path in settings.gcs_secret_volumes.items():
            kubernetes.use_secret_as_volume(task, secret, mount_path)
        for name, value in settings.gcs_environment.items():
            task.set_env_variable(name, value)
    if step in ARTIFACT_STORE_STEPS:
        for secret, mount_path in settings.artifact_store_secret_volumes.items():
            kubernetes.use_secret_as_volume(task, secret, mount_path, optional=True)
        for name, value in settings.artifact_store_environment.items():
            task.set_env_variable(name, value)
    if step in REGISTRY_STEPS:
        for name, value in sorted(settings.registry_environment.items()):
            task.set_env_variable(name, value)
        if settings.model_registry_credentials_secret:
            kubernetes.use_secret_as_volume(
                task, settings.model_registry_credentials_secret, settings.model_registry_credentials_mount_path
            )
    if settings.registry_secret and step == "containerize":
        kubernetes.use_secret_as_volume(task, settings.registry_secret, settings.registry_mount_path)
    if settings.dvc_cache_pvc and step == "dvc-pull":
        kubernetes.mount_pvc(task, settings.dvc_cache_pvc, settings.dvc_cache_mount_path)
    if settings.shm_size and step == "train":
        kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=settings.shm_size)
    return task


def configure_accelerator(
    task: dsl.PipelineTask, gpus, accelerator_type, node_selector, tolerations
) -> dsl.PipelineTask:
    """GPU count, accelerator, node selector and tolerations of the training step, from pipeline parameters."""
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    return task
