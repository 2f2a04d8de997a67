"""The MLflow Model Registry, through MLflow's own client (``mlflow-skinny``), as GourmetGram uses it.

A registration is an MLflow run in the experiment ``KFP_TORCH_REGISTRY_EXPERIMENT`` (its parameters are the
training parameters, its metrics evaluate's scores, its tags the dataset and the pipeline run, so MLflow's
UI compares registrations) and a version of the registered model whose source is the Model artifact's URI
(the files stay in the pipeline's artifact store) and whose tags hold every registration property. What
serves in production carries the alias ``production`` (MLflow's stages are deprecated), and the version's
tags record the image and the deployment.

MLflow's server refuses a local path as a version's source: register models that live in an object store
(a cluster's ``minio://``, ``s3://`` or ``gs://`` pipeline root).

Credentials reach MLflow's client the way it reads them, as ``MLFLOW_TRACKING_TOKEN`` or
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` in the environment, set only while a call runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.storage import is_remote
from components.register.registration import Registration
from components.register.registry import PRODUCTION, Deployment, RegisteredVersion, Registry, RegistryError, check_image

REGISTRATION_FILE = "registration.json"
# What MLflow accepts in a param or metric name (mlflow.utils.validation, on POSIX).
_NOT_IN_NAME = re.compile(r"[^/\w.\- :]")
MAX_PARAM_VALUE = 6000
log = logging.getLogger(__name__)


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow param, metric or tag name: characters MLflow refuses become '_'."""
    return _NOT_IN_NAME.sub("_", name).strip("/") or "_"


class MlflowRegistry(Registry):
    name = "mlflow"

    def describe(self) -> str:
        return f"the MLflow registry at {self.settings.public_url}"

    @contextlib.contextmanager
    def _client(self, action: str) -> Iterator:
        """An ``MlflowClient`` for the settings' server, with the credentials in MLflow's variables meanwhile."""
        variables = {
            "MLFLOW_TRACKING_TOKEN": self.credentials.token,
            "MLFLOW_TRACKING_USERNAME": self.credentials.username if self.credentials.password else "",
            "MLFLOW_TRACKING_PASSWORD": self.credentials.password,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": self.settings.ca_file,
        }
        with self.guard(action), _environment({name: value for name, value in variables.items() if value}):
            from mlflow import MlflowClient

            yield MlflowClient(tracking_uri=self.settings.url, registry_uri=self.settings.url)

    def register(self, registration: Registration, output_dir: str) -> RegisteredVersion:
        uri = registration.model_uri
        if not is_remote(uri) or urlsplit(uri).scheme == "file":
            raise RegistryError(
                f"{self.describe()} cannot register {uri}: MLflow's server refuses a local path as a model "
                "version's source; run the pipeline with a pipeline root in an object store (minio://, s3://, gs://)"
            )
        if set(uri) & {"'", '"', "\\"} or any(ord(character) < 32 for character in uri):
            raise RegistryError(f"model URI {uri!r} has quotes or control characters: MLflow's search cannot match it")
        name = self.settings.model_name
        properties = registration.properties()
        with self._client(f"registering {uri} as a version of {name}") as client:
            existing = self._version_of(client, uri)
            if existing is not None:  # an earlier attempt of this step registered it
                log.info("%s already holds %s as version %s", self.describe(), uri, existing.version)
                version = existing
            else:
                self._ensure_model(client, name)
                run_id = self._log_run(client, registration)
                version = client.create_model_version(
                    name,
                    uri,
                    run_id=run_id,
                    tags={mlflow_key(key): _tag(value) for key, value in properties.items()},
                    description=registration.description(),
                )
                client.set_terminated(run_id, "FINISHED")
            if version.status != "READY":
                raise RegistryError(f"{self.describe()}: version {version.version} of {name} is {version.status}")
        registered = self._registered(name, version)
        self._write(output_dir, registered, properties)
        return registered

    def _registered(self, name: str, version) -> RegisteredVersion:
        return RegisteredVersion(
            registry=self.name,
            registry_url=self.settings.url,
            model_name=name,
            version=str(version.version),
            version_id=str(version.version),
            model_uri=version.source,
            registered_model_id=name,
            run_id=version.run_id or "",
        )

    def _write(self, output_dir: str, registered: RegisteredVersion, properties: dict) -> None:
        with atomic_directory(output_dir) as staging:
            write_json_atomic(staging / REGISTRATION_FILE, {**registered.metadata(), "properties": properties})

    def _version_of(self, client, uri: str):
        found = client.search_model_versions(f"name='{self.settings.model_name}' and source_path='{uri}'")
        return max(found, key=lambda item: int(item.version)) if found else None

    def _ensure_model(self, client, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                client.create_registered_model(name, description="Image classifiers trained by kfp-torch-lifecycle")
            except MlflowException as again:  # another run created it meanwhile
                if again.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def _experiment_id(self, client) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.settings.experiment)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(self.settings.experiment)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(self.settings.experiment).experiment_id

    def _log_run(self, client, registration: Registration) -> str:
        """A run holding the training parameters, the scores and the lineage; returns its id."""
        from mlflow.entities import Metric, Param

        tags = {
            mlflow_key(key): value
            for key, value in registration.properties().items()
            if not key.startswith(("metric.", "param.")) and isinstance(value, str) and value
        }
        run_name = registration.run.name or registration.run.id or None
        run = client.create_run(self._experiment_id(client), run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            params = [
                Param(mlflow_key(name), json.dumps(value, sort_keys=True)[:MAX_PARAM_VALUE])
                for name, value in registration.parameters_flat().items()
            ]
            metrics = [Metric(mlflow_key(name), value, now, 0) for name, value in registration.metrics.items()]
            for start in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(run_id, params=params[start : start + 100], metrics=[] if start else metrics)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        return run_id

    def production(self) -> RegisteredVersion | None:
        from mlflow.exceptions import MlflowException

        name = self.settings.model_name
        with self._client(f"finding the {PRODUCTION} version of {name}") as client:
            try:
                model = client.get_registered_model(name)
            except MlflowException as error:
                if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            if PRODUCTION not in (model.aliases or {}):
                return None
            return self._registered(name, client.get_model_version_by_alias(name, PRODUCTION))

    def mark_serving(self, version: RegisteredVersion, deployment: Deployment) -> None:
        self._check_ours(version)
        if deployment.image:
            check_image(deployment.image)
        with self._client(f"marking version {version.version} of {version.model_name} as {PRODUCTION}") as client:
            tags = {
                "deployment": deployment.name,
                "deployment_namespace": deployment.namespace,
                "deployment_url": deployment.url,
                "deployment_runtime": deployment.runtime,
                "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "image": deployment.image,
            }
            for key, value in tags.items():
                if value:
                    client.set_model_version_tag(version.model_name, version.version, key, value)
            client.set_registered_model_alias(version.model_name, PRODUCTION, version.version)

    def record_image(self, version: RegisteredVersion, image: str) -> None:
        self._check_ours(version)
        check_image(image)
        with self._client(f"recording the image of version {version.version} of {version.model_name}") as client:
            client.set_model_version_tag(version.model_name, version.version, "image", image)

    def _check_ours(self, version: RegisteredVersion) -> None:
        if version.registry != self.name or version.registry_url.rstrip("/") != self.settings.url:
            raise RegistryError(f"{version.describe()} is not a version in {self.describe()}")


def _tag(value) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
