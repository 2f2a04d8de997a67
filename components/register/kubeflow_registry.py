"""The Kubeflow Model Registry, through its Python client ``model-registry`` (REST API ``v1alpha3``).

A registration is a ``ModelVersion`` of the ``RegisteredModel`` named ``KFP_TORCH_REGISTRY_MODEL_NAME``,
named after the pipeline run's id (so a retry of the step finds the version its first attempt made), with
every registration property as a typed custom property and a ``ModelArtifact`` whose URI is the Model
artifact's (the files stay in the pipeline's artifact store; ``modelSourceKind`` ``kfp``, class
``pipelinerun``, id and name of the run).

What serves is recorded as Kubeflow's own KServe integration records it
(``pkg/inferenceservice-controller`` in kubeflow/model-registry): a ``ServingEnvironment``
(``KFP_TORCH_REGISTRY_SERVING_ENVIRONMENT``; the controller names one after the namespace it serves in),
an ``InferenceService`` in it per deployment, pointing at the registered model and the served version,
``desiredState`` ``DEPLOYED`` and the service's ``url`` as a custom property, and a ``ServeModel`` action
for each rollout. The production version is the one the most recently updated ``DEPLOYED``
InferenceService of this model in that environment serves, as the server resolves it
(``GET /inference_services/{id}/version``).

The client ``model-registry`` 0.3.9 speaks ``/api/model_registry/v1alpha3``, which every Model Registry
server release serves (later servers serve ``v1`` beside it); clients from 0.3.10 on speak only ``v1``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit

from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.spec import MODEL_FORMAT, SPEC_FORMAT_VERSION
from components.register.registration import Registration
from components.register.registry import Deployment, RegisteredVersion, Registry, RegistryError, check_image

REGISTRATION_FILE = "registration.json"
SOURCE_KIND, SOURCE_CLASS = "kfp", "pipelinerun"
DEPLOYED = "DEPLOYED"
PAGE_SIZE = 100
log = logging.getLogger(__name__)


class KubeflowRegistry(Registry):
    name = "kubeflow"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = None

    def describe(self) -> str:
        return f"the Kubeflow Model Registry at {self.settings.public_url}"

    @contextlib.contextmanager
    def _session(self, action: str) -> Iterator:
        with self.guard(action):
            yield self._connect()

    def _connect(self):
        if self._client is not None:
            return self._client
        token = self.credentials.token
        if self.credentials.password:
            raise RegistryError(
                f"{self.describe()} takes a bearer token ('token' in the mounted Secret, or the pod's ServiceAccount "
                "token), not a username and password"
            )
        secure = urlsplit(self.settings.url).scheme == "https"
        if secure and not token:
            raise RegistryError(
                f"{self.describe()} is https, which the client only uses with a token: mount a Secret with 'token' "
                "at KFP_TORCH_REGISTRY_CREDENTIALS_DIR or run the step with a ServiceAccount token"
            )
        # The client configures the root logger when imported; ours (the step's) is set up before.
        from model_registry import ModelRegistry

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "User access token is missing": a registry without auth is fine
            self._client = ModelRegistry(
                self.settings.url,
                author="kfp-torch-lifecycle",
                is_secure=secure,
                user_token=token or None,
                custom_ca=self.settings.ca_file or None,
            )
        return self._client

    def _api(self, client, call):
        """Run ``call(api)`` with the generated REST client (``mr_openapi``) over the library client's own
        connection (``ModelRegistry._api``, its ``ModelRegistryAPIClient``): the library's client has no calls
        for serving environments, inference services and serve actions."""

        async def run():
            async with client._api.get_client() as api:
                return await call(api)

        return client.async_runner(run())

    # --- register ---------------------------------------------------------------------------------------

    def register(self, registration: Registration, output_dir: str) -> RegisteredVersion:
        name = self.settings.model_name
        version_name = registration.run.id or f"local-{registration.registered_at}"
        properties = registration.properties()
        with self._session(f"registering {registration.model_uri} as version {version_name} of {name}") as client:
            from model_registry.exceptions import StoreError

            version = None
            with contextlib.suppress(StoreError):  # StoreError: no such registered model yet
                version = client.get_model_version(name, version_name)
            if version is None:
                client.register_model(
                    name,
                    registration.model_uri,
                    model_format_name=MODEL_FORMAT,
                    model_format_version=str(SPEC_FORMAT_VERSION),
                    version=version_name,
                    version_description=registration.description(),
                    metadata=properties,
                    model_source_kind=SOURCE_KIND,
                    model_source_class=SOURCE_CLASS,
                    model_source_id=registration.run.id or None,
                    model_source_name=registration.run.name or None,
                )
                version = client.get_model_version(name, version_name)
            else:
                log.info("%s already holds version %s of %s", self.describe(), version_name, name)
            artifact = client.get_model_artifact(name, version_name)
            if artifact is None:  # an earlier attempt stopped between the version and its artifact
                from model_registry.types import ModelArtifact

                client.async_runner(
                    client._api.upsert_model_version_artifact(
                        ModelArtifact(
                            name=name,
                            uri=registration.model_uri,
                            model_format_name=MODEL_FORMAT,
                            model_format_version=str(SPEC_FORMAT_VERSION),
                            model_source_kind=SOURCE_KIND,
                            model_source_class=SOURCE_CLASS,
                            model_source_id=registration.run.id or None,
                            model_source_name=registration.run.name or None,
                        ),
                        str(version.id),
                    )
                )
                artifact = client.get_model_artifact(name, version_name)
            if artifact.uri != registration.model_uri:
                raise RegistryError(
                    f"{self.describe()}: version {version_name} of {name} already registers {artifact.uri}, "
                    f"not {registration.model_uri}"
                )
            model = client.get_registered_model(name)
        registered = RegisteredVersion(
            registry=self.name,
            registry_url=self.settings.url,
            model_name=name,
            version=version_name,
            version_id=str(version.id),
            model_uri=artifact.uri,
            registered_model_id=str(model.id),
        )
        with atomic_directory(output_dir) as staging:
            write_json_atomic(staging / REGISTRATION_FILE, {**registered.metadata(), "properties": properties})
        return registered

    # --- production -------------------------------------------------------------------------------------

    def production(self) -> RegisteredVersion | None:
        from mr_openapi.exceptions import NotFoundException

        name = self.settings.model_name
        environment = self.settings.serving_environment
        with self._session(f"finding the version of {name} serving in {environment}") as client:
            model = client.get_registered_model(name)
            if model is None:
                return None

            async def find(api):
                try:
                    serving = await api.find_serving_environment(name=environment)
                except NotFoundException:
                    return None
                services = await _all_pages(
                    lambda token: api.get_environment_inference_services(
                        serving.id, page_size=str(PAGE_SIZE), next_page_token=token
                    )
                )
                deployed = [
                    service
                    for service in services
                    if service.registered_model_id == model.id and _state(service.desired_state) == DEPLOYED
                ]
                if not deployed:
                    return None
                latest = max(deployed, key=lambda service: int(service.last_update_time_since_epoch or 0))
                version = await api.get_inference_service_version(latest.id)
                artifacts = await _all_pages(
                    lambda token: api.get_model_version_artifacts(
                        version.id, page_size=str(PAGE_SIZE), next_page_token=token
                    )
                )
                uris = [item.actual_instance.uri for item in artifacts if _is_model_artifact(item)]
                if not uris:
                    raise RegistryError(
                        f"{self.describe()}: version {version.name} of {name}, serving in {environment}, has no "
                        "model artifact"
                    )
                return version, uris[0]

            found = self._api(client, find)
        if found is None:
            return None
        version, uri = found
        return RegisteredVersion(
            registry=self.name,
            registry_url=self.settings.url,
            model_name=name,
            version=version.name,
            version_id=str(version.id),
            model_uri=uri,
            registered_model_id=str(model.id),
        )

    def no_production_reason(self) -> str:
        return (
            f"no version of {self.settings.model_name} is deployed in the serving environment "
            f"{self.settings.serving_environment!r} of {self.describe()}: this first model is compared with nothing"
        )

    # --- what serves ------------------------------------------------------------------------------------

    def mark_serving(self, version: RegisteredVersion, deployment: Deployment) -> None:
        from mr_openapi import (
            InferenceServiceCreate,
            InferenceServiceUpdate,
            MetadataStringValue,
            MetadataValue,
            ServeModelCreate,
            ServingEnvironmentCreate,
        )
        from mr_openapi.exceptions import NotFoundException

        self._check_ours(version)
        if deployment.image:
            check_image(deployment.image)
        if not deployment.name:
            raise RegistryError("a deployment needs the name of what serves (its InferenceService or Deployment)")
        environment = self.settings.serving_environment
        properties = {
            "url": deployment.url,
            "namespace": deployment.namespace,
            "image": deployment.image,
        }
        custom = {
            key: MetadataValue(MetadataStringValue(string_value=value, metadataType="MetadataStringValue"))
            for key, value in properties.items()
            if value
        }
        action = f"marking {version.describe()} as serving through {deployment.name} in {environment}"
        with self._session(action) as client:

            async def mark(api):
                try:
                    serving = await api.find_serving_environment(name=environment)
                except NotFoundException:
                    serving = await api.create_serving_environment(ServingEnvironmentCreate(name=environment))
                try:
                    service = await api.find_inference_service(name=deployment.name, parent_resource_id=serving.id)
                except NotFoundException:
                    service = None
                if service is None:
                    # Created under its environment: for POST /inference_services the spec declares 200 while the
                    # server answers 201, so the generated client returns None there; this path declares 201.
                    service = await api.create_environment_inference_service(
                        serving.id,
                        InferenceServiceCreate(
                            name=deployment.name,
                            registered_model_id=version.registered_model_id,
                            serving_environment_id=serving.id,
                            model_version_id=version.version_id,
                            runtime=deployment.runtime or None,
                            desired_state=DEPLOYED,
                            custom_properties=custom or None,
                        ),
                    )
                else:
                    if service.registered_model_id != version.registered_model_id:
                        raise RegistryError(
                            f"{self.describe()}: InferenceService {deployment.name} in {environment} serves registered "
                            f"model {service.registered_model_id}, not {version.model_name} "
                            f"({version.registered_model_id})"
                        )
                    service = await api.update_inference_service(
                        service.id,
                        InferenceServiceUpdate(
                            model_version_id=version.version_id,
                            runtime=deployment.runtime or None,
                            desired_state=DEPLOYED,
                            custom_properties={
                                **{k: v for k, v in (service.custom_properties or {}).items() if k not in properties},
                                **custom,
                            }
                            or None,
                        ),
                    )
                await api.create_inference_service_serve(
                    service.id,
                    ServeModelCreate(
                        name=f"{version.version}@{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}",
                        model_version_id=version.version_id,
                        last_known_state="RUNNING",
                    ),
                )

            self._api(client, mark)
        if deployment.image:
            self.record_image(version, deployment.image)

    def record_image(self, version: RegisteredVersion, image: str) -> None:
        self._check_ours(version)
        check_image(image)
        with self._session(f"recording the image of {version.describe()}") as client:
            current = client.get_model_version(version.model_name, version.version)
            if current is None or str(current.id) != version.version_id:
                raise RegistryError(f"{self.describe()} has no version {version.version} of {version.model_name}")
            current.custom_properties = {**(current.custom_properties or {}), "image": image}
            client.update(current)

    def _check_ours(self, version: RegisteredVersion) -> None:
        if version.registry != self.name or version.registry_url.rstrip("/") != self.settings.url:
            raise RegistryError(f"{version.describe()} is not a version in {self.describe()}")


async def _all_pages(fetch) -> list:
    items, token = [], None
    while True:
        page = await fetch(token)
        items.extend(page.items or [])
        token = page.next_page_token
        if not token or not page.items:
            return items


def _state(value) -> str:
    if value is None:
        return DEPLOYED  # the schema's default
    return getattr(value, "value", value)


def _is_model_artifact(item) -> bool:
    return type(item.actual_instance).__name__ == "ModelArtifact"
