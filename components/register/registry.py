"""One interface over the model registries: register a version, mark what serves, find what is in production.

``open_registry(settings)`` returns the backend the settings name:

- ``mlflow``: the MLflow Model Registry (``components.register.mlflow_registry``);
- ``kubeflow``: the Kubeflow Model Registry (``components.register.kubeflow_registry``);
- ``none``: no registry; ``register`` writes ``promotion.json`` (``components.register.none_registry``).

Every backend answers in the same terms: a :class:`RegisteredVersion` names a version (registry, model,
version, its id there, the model's URI), which the ``register`` step puts in its output artifact's metadata
and later steps read back with :meth:`RegisteredVersion.from_metadata`. A :class:`Deployment` says what the
``deploy`` step rolled out. Calls run with every credential masked in log records and errors
(:meth:`Registry.guard`): a failure is a :class:`RegistryError` naming the registry and what failed.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields

from components.dvc_pull.redaction import redact_text, redacted_logs
from components.register.registration import Registration
from components.register.settings import Credentials, RegistrySettings

PRODUCTION = "production"  # MLflow's alias for the serving version; the word this library uses for it


class RegistryError(RuntimeError):
    """A registry call that failed; the message names the registry and the call, never a credential."""


@dataclass(frozen=True)
class RegisteredVersion:
    """A version in a registry, as later steps need it."""

    registry: str  # none, mlflow or kubeflow
    registry_url: str  # "" for none
    model_name: str
    version: str  # MLflow's version number, the Kubeflow ModelVersion's name; "" for none
    version_id: str  # the id to address it by: MLflow's number again, Kubeflow's ModelVersion id
    model_uri: str  # where the model's files are (the Model artifact's URI)
    registered_model_id: str = ""  # Kubeflow's RegisteredModel id; the model name for MLflow
    run_id: str = ""  # MLflow: the run that holds the version's parameters and metrics

    def metadata(self) -> dict[str, str]:
        """The artifact metadata the ``register`` step writes (flat strings, as KFP shows them)."""
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping) -> RegisteredVersion:
        """A version read back from the ``register`` step's artifact metadata (e.g. in ``deploy``)."""
        names = [item.name for item in fields(cls)]
        missing = [name for name in ("registry", "model_name", "version", "model_uri") if name not in metadata]
        if missing:
            raise RegistryError(
                f"not a registered version's metadata: no {', '.join(missing)} (the register step writes "
                f"{', '.join(names)})"
            )
        return cls(**{name: str(metadata.get(name, "")) for name in names})

    def describe(self) -> str:
        if self.registry == "none":
            return f"{self.model_uri} (no registry)"
        return f"{self.model_name} version {self.version} in the {self.registry} registry at {self.registry_url}"


@dataclass(frozen=True)
class Deployment:
    """What the ``deploy`` step rolled out and verified."""

    name: str  # the serving resource's name (a KServe InferenceService, a Deployment)
    url: str = ""  # where it answers
    image: str = ""  # repository@sha256:... it runs
    namespace: str = ""
    runtime: str = "bentoml"


class Registry(abc.ABC):
    """A model registry; see the module docstring."""

    name = ""  # none, mlflow, kubeflow

    def __init__(self, settings: RegistrySettings, credentials: Credentials | None = None):
        self.settings = settings
        self.credentials = credentials if credentials is not None else settings.credentials()

    def describe(self) -> str:
        """The registry in words, for messages: 'the MLflow registry at http://...'."""
        return f"the {self.name} registry at {self.settings.public_url}"

    @contextlib.contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Run a registry call: credentials masked in every log record made meanwhile, and any failure
        raised as a ``RegistryError`` naming ``action`` and the registry, with credentials masked."""
        with redacted_logs() as secrets:
            secrets.update(self.credentials.secrets)
            try:
                yield
            except RegistryError as error:
                raise RegistryError(redact_text(str(error), self.credentials.secrets)) from None
            except Exception as error:  # the client libraries' own exceptions: any of them may quote a request
                detail = redact_text(f"{type(error).__name__}: {error}", self.credentials.secrets)
                raise RegistryError(f"{self.describe()}: {action} failed: {detail}") from None

    @abc.abstractmethod
    def register(self, registration: Registration, output_dir: str) -> RegisteredVersion:
        """Register ``registration``'s model as a new version (or find the version an earlier attempt of the
        same step registered); write what the registry keeps of it into ``output_dir``."""

    @abc.abstractmethod
    def production(self) -> RegisteredVersion | None:
        """The version marked as serving in production; ``None`` when there is none yet."""

    @abc.abstractmethod
    def mark_serving(self, version: RegisteredVersion, deployment: Deployment) -> None:
        """Record that ``version`` serves in production through ``deployment`` (after a verified rollout),
        with the image it runs recorded on the version."""

    @abc.abstractmethod
    def record_image(self, version: RegisteredVersion, image: str) -> None:
        """Record the serving image (``repository@sha256:...``) on an existing version."""

    def no_production_reason(self) -> str:
        """Why :meth:`production` found nothing, in words for the report."""
        return (
            f"no version of {self.settings.model_name} is in production in {self.describe()}: "
            "this first model is compared with nothing"
        )


def open_registry(settings: RegistrySettings | None = None, credentials: Credentials | None = None) -> Registry:
    """The backend ``settings.registry`` names (settings from the environment when not given)."""
    settings = settings or RegistrySettings.from_environment()
    settings.validate()
    if settings.registry == "mlflow":
        from components.register.mlflow_registry import MlflowRegistry

        return MlflowRegistry(settings, credentials)
    if settings.registry == "kubeflow":
        from components.register.kubeflow_registry import KubeflowRegistry

        return KubeflowRegistry(settings, credentials)
    from components.register.none_registry import NoRegistry

    return NoRegistry(settings, credentials)


def check_image(image: str) -> str:
    """``image`` when it names an image by digest (``repository@sha256:<64 hex>``), else a ``RegistryError``."""
    repository, _, digest = image.partition("@")
    algorithm, _, hexdigest = digest.partition(":")
    if not repository or algorithm != "sha256" or len(hexdigest) != 64 or set(hexdigest) - set("0123456789abcdef"):
        raise RegistryError(f"image {image!r} is not named by digest: give repository@sha256:<64 hex digits>")
    return image


def json_text(value) -> str:
    """A value as compact, stable JSON text (for registries that hold strings)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
