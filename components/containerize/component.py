"""KFP component: build the bento into an OCI image with buildah (no Docker daemon) and push it."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def containerize(
    bento: Input[Artifact],
    image_repository: str,
    base_image: str = "docker.io/library/python:3.11-slim",
    push: bool = True,
    registry_auth_file: str = "",
    storage_root: str = "",
) -> str:
    """Builds the exported bento's generated Dockerfile with buildah and pushes the image.

    Args:
        bento: ``build_bento``'s output (the exported bento archive and ``bento.json``).
        image_repository: where the image goes, e.g. ``registry.example.com/ml/image-classifier``;
            the tag is the bento's version.
        base_image: replaces the Dockerfile's first FROM (a Python 3.11 Debian-based image).
        push: push to the registry; without it the image stays in local buildah storage.
        registry_auth_file: a mounted dockerconfigjson Secret (e.g.
            ``/var/secrets/registry/.dockerconfigjson``); empty for ``$REGISTRY_AUTH_FILE``.
            Its content is never read into parameters or logs.
        storage_root: buildah storage directory (empty: buildah's default).

    Returns:
        Output: The image as ``repository@sha256:…``; empty when buildah is missing and ``push`` is
            false (the step says why), so a local run without buildah still completes.
    """
    from pathlib import Path

    from components.build_bento.packaging import read_descriptor
    from components.containerize.buildah import BuildahMissing, build_image

    descriptor = read_descriptor(bento.path)
    image = f"{image_repository}:{descriptor['bento_tag'].split(':', 1)[1]}"
    try:
        built = build_image(
            Path(bento.path) / descriptor["archive"],
            image,
            base_image,
            push=push,
            registry_auth_file=registry_auth_file,
            storage_root=storage_root,
        )
    except BuildahMissing as missing:
        if push:
            raise
        print(f"skipping the image build: {missing}")
        return ""
    where = " and pushed it" if built.pushed else " into local buildah storage"
    print(f"built {built.reference} ({built.size_bytes / 1e6:.1f} MB){where}")
    return built.reference
