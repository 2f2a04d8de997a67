"""Where the model registry is and how to reach it: read from the step's environment, never from parameters.

A cluster's platform team fixes these once (the pipelines set them on the steps that use a registry,
from the compile-time cluster settings); credentials come from a Kubernetes Secret mounted as files in
``KFP_TORCH_REGISTRY_CREDENTIALS_DIR`` or from the environment, and never reach a parameter, a log or
the compiled YAML.

=====================================  ==========================================================
variable                               meaning
=====================================  ==========================================================
``KFP_TORCH_REGISTRY``                 ``none`` (default), ``mlflow`` or ``kubeflow``
``KFP_TORCH_REGISTRY_URL``             mlflow: the tracking server (``http://mlflow.mlflow:5000``);
                                       kubeflow: the Model Registry's REST address (default
                                       ``http://model-registry-service.kubeflow.svc.cluster.local:8080``)
``KFP_TORCH_REGISTRY_MODEL_NAME``      the registered model (default ``image-classifier``)
``KFP_TORCH_REGISTRY_CREDENTIALS_DIR`` a mounted Secret: ``token``, or ``username`` and ``password``
``KFP_TORCH_REGISTRY_CA_FILE``         a CA bundle for an https registry signed by a private CA
``KFP_TORCH_REGISTRY_SERVING_ENVIRONMENT``  kubeflow: the ServingEnvironment whose deployed
                                       InferenceService is production (default ``production``)
``KFP_TORCH_REGISTRY_EXPERIMENT``      mlflow: the experiment holding each registration's run
                                       (default ``kfp-torch-lifecycle``)
=====================================  ==========================================================

Credentials, first found wins: the files in ``KFP_TORCH_REGISTRY_CREDENTIALS_DIR``; then
``KFP_TORCH_REGISTRY_TOKEN`` or ``KFP_TORCH_REGISTRY_USERNAME`` and ``KFP_TORCH_REGISTRY_PASSWORD``
(e.g. from a Secret through ``env.valueFrom``); then, for MLflow, MLflow's own ``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, and for Kubeflow the pod's
ServiceAccount token (what Kubeflow's Model Registry checks behind its RBAC proxy).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REGISTRIES = ("none", "mlflow", "kubeflow")

REGISTRY_ENV = "KFP_TORCH_REGISTRY"
URL_ENV = "KFP_TORCH_REGISTRY_URL"
MODEL_NAME_ENV = "KFP_TORCH_REGISTRY_MODEL_NAME"
CREDENTIALS_DIR_ENV = "KFP_TORCH_REGISTRY_CREDENTIALS_DIR"
CA_FILE_ENV = "KFP_TORCH_REGISTRY_CA_FILE"
SERVING_ENVIRONMENT_ENV = "KFP_TORCH_REGISTRY_SERVING_ENVIRONMENT"
EXPERIMENT_ENV = "KFP_TORCH_REGISTRY_EXPERIMENT"
TOKEN_ENV = "KFP_TORCH_REGISTRY_TOKEN"
USERNAME_ENV = "KFP_TORCH_REGISTRY_USERNAME"
PASSWORD_ENV = "KFP_TORCH_REGISTRY_PASSWORD"
# The files a mounted Secret may hold (its keys).
TOKEN_FILE, USERNAME_FILE, PASSWORD_FILE = "token", "username", "password"

DEFAULT_MODEL_NAME = "image-classifier"
DEFAULT_KUBEFLOW_URL = "http://model-registry-service.kubeflow.svc.cluster.local:8080"
DEFAULT_SERVING_ENVIRONMENT = "production"
DEFAULT_EXPERIMENT = "kfp-torch-lifecycle"
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# A registered model's name: what both registries accept and a URL path carries without escaping.
MODEL_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class RegistrySettingsError(ValueError):
    """A registry setting that cannot work; the message names the variable and what would be valid."""


@dataclass(frozen=True)
class Credentials:
    """What authenticates us to the registry; ``repr`` never shows it."""

    token: str = field(default="", repr=False)
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    source: str = ""  # where they came from, for messages: a path or a variable name, never a value

    @property
    def secrets(self) -> set[str]:
        """The values to mask wherever text leaves the process."""
        return {value for value in (self.token, self.password) if value}

    def __bool__(self) -> bool:
        return bool(self.token or self.password)


@dataclass(frozen=True)
class RegistrySettings:
    registry: str = "none"
    url: str = ""
    model_name: str = DEFAULT_MODEL_NAME
    credentials_dir: str = ""
    ca_file: str = ""
    serving_environment: str = DEFAULT_SERVING_ENVIRONMENT
    experiment: str = DEFAULT_EXPERIMENT

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RegistrySettings:
        """The settings the step's environment gives, checked (``RegistrySettingsError`` names a bad one)."""
        env = os.environ if environ is None else environ
        registry = env.get(REGISTRY_ENV, "").strip() or "none"
        url = env.get(URL_ENV, "").strip()
        if registry == "kubeflow" and not url:
            url = DEFAULT_KUBEFLOW_URL
        settings = cls(
            registry=registry,
            url=url.rstrip("/"),
            model_name=env.get(MODEL_NAME_ENV, "").strip() or DEFAULT_MODEL_NAME,
            credentials_dir=env.get(CREDENTIALS_DIR_ENV, "").strip(),
            ca_file=env.get(CA_FILE_ENV, "").strip(),
            serving_environment=env.get(SERVING_ENVIRONMENT_ENV, "").strip() or DEFAULT_SERVING_ENVIRONMENT,
            experiment=env.get(EXPERIMENT_ENV, "").strip() or DEFAULT_EXPERIMENT,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.registry not in REGISTRIES:
            raise RegistrySettingsError(f"{REGISTRY_ENV}={self.registry!r}: use one of {', '.join(REGISTRIES)}")
        if not self.model_name or set(self.model_name) - MODEL_NAME_CHARACTERS or len(self.model_name) > 200:
            raise RegistrySettingsError(
                f"{MODEL_NAME_ENV}={self.model_name!r}: a registered model's name is 1 to 200 letters, digits, "
                "'-', '_' or '.'"
            )
        if self.registry == "none":
            return
        if not self.url:
            raise RegistrySettingsError(f"{REGISTRY_ENV}={self.registry} needs {URL_ENV}, the registry's http(s) URL")
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError:
            raise RegistrySettingsError(f"{URL_ENV}: not a URL (host or port unreadable)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistrySettingsError(
                f"{URL_ENV}={self.public_url!r}: give the registry's http:// or https:// address, e.g. "
                + ("http://mlflow.mlflow:5000" if self.registry == "mlflow" else DEFAULT_KUBEFLOW_URL)
            )
        if parts.username or parts.password:
            raise RegistrySettingsError(
                f"{URL_ENV} carries a user or password ({self.public_url}): put credentials in the Secret mounted at "
                f"{CREDENTIALS_DIR_ENV} ({TOKEN_FILE}, or {USERNAME_FILE} and {PASSWORD_FILE}), never in the URL"
            )
        if parts.query or parts.fragment:
            raise RegistrySettingsError(f"{URL_ENV}={self.public_url!r}: a registry address has no query or fragment")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise RegistrySettingsError(f"{CA_FILE_ENV}={self.ca_file}: no such file")

    @property
    def public_url(self) -> str:
        """The URL for messages, with any user information masked."""
        from components.dvc_pull.redaction import redact_url

        return redact_url(self.url)

    def environment(self) -> dict[str, str]:
        """The variables that give a step these settings (never credentials): what the pipelines set."""
        values = {
            REGISTRY_ENV: self.registry,
            URL_ENV: self.url,
            MODEL_NAME_ENV: self.model_name,
            CREDENTIALS_DIR_ENV: self.credentials_dir,
            CA_FILE_ENV: self.ca_file,
            SERVING_ENVIRONMENT_ENV: self.serving_environment,
            EXPERIMENT_ENV: self.experiment,
        }
        return {name: value for name, value in values.items() if value}

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """The registry's credentials: the mounted Secret's files, else the environment (see the module)."""
        env = os.environ if environ is None else environ
        if self.credentials_dir:
            found = _read_secret_dir(Path(self.credentials_dir))
            if found:
                return found
        token = env.get(TOKEN_ENV, "").strip()
        username, password = env.get(USERNAME_ENV, "").strip(), env.get(PASSWORD_ENV, "")
        if token or password:
            if password and not username:
                raise RegistrySettingsError(f"{PASSWORD_ENV} is set without {USERNAME_ENV}")
            return Credentials(token=token, username=username, password=password.strip(), source="environment")
        if self.registry == "kubeflow" and SERVICE_ACCOUNT_TOKEN.is_file():
            return Credentials(token=SERVICE_ACCOUNT_TOKEN.read_text().strip(), source=str(SERVICE_ACCOUNT_TOKEN))
        return Credentials()


def _read_secret_dir(directory: Path) -> Credentials | None:
    """A Secret mounted as files; ``None`` when it holds none of ours (it is mounted optionally)."""

    def read(name: str) -> str:
        path = directory / name
        try:
            value = path.read_text().strip()
        except OSError as error:
            raise RegistrySettingsError(
                f"{CREDENTIALS_DIR_ENV}: cannot read {path}: {error.strerror or type(error).__name__}"
            ) from None
        if not value:
            raise RegistrySettingsError(f"{path} is empty")
        return value

    present = {name for name in (TOKEN_FILE, USERNAME_FILE, PASSWORD_FILE) if (directory / name).exists()}
    if not present:
        return None
    if TOKEN_FILE in present:
        return Credentials(token=read(TOKEN_FILE), source=str(directory / TOKEN_FILE))
    if present != {USERNAME_FILE, PASSWORD_FILE}:
        missing = ({USERNAME_FILE, PASSWORD_FILE} - present).pop()
        raise RegistrySettingsError(
            f"{directory} holds {', '.join(sorted(present))} but no {missing!r}: the Secret needs '{TOKEN_FILE}', "
            f"or '{USERNAME_FILE}' and '{PASSWORD_FILE}'"
        )
    return Credentials(username=read(USERNAME_FILE), password=read(PASSWORD_FILE), source=str(directory))
