"""KFP component: pull DVC-tracked data at a git revision into a ``Dataset``."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.descriptions import described
from components.common.git import REPOSITORY_INPUTS
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described(REPOSITORY_INPUTS)
def dvc_pull(
    repo_url: str,
    rev: str,
    paths: List[str],
    dataset: Output[Dataset],
    remote: str = "",
    remote_config: Dict[str, str] = {},
    jobs: int = 4,
    cache_dir: str = "",
    connect_timeout: float = 10.0,
    read_timeout: float = 20.0,
    object_deadline: float = 60.0,
):
    """Pulls DVC-tracked paths of a git revision.

    Args:
        paths: DVC-tracked paths relative to the repository root, e.g. ["data/raw"].
        dataset: output directory keeping the repository layout (``data/raw/...``).
            Metadata: ``commit`` (resolved SHA), ``md5`` (DVC hash per path),
            ``file_count``, ``total_bytes``, ``remote``, ``paths``.
        remote: The DVC remote to pull from, by name; empty for the repository's default remote.
        remote_config: Settings of that remote, applied locally, e.g. {"endpointurl": "https://..."} or
            {"url": "gs://bucket/path"}. Never credentials: they come from files (GOOGLE_APPLICATION_CREDENTIALS).
        jobs: Parallel downloads.
        cache_dir: a DVC cache to reuse (e.g. on a PVC); empty for a throwaway cache.
        connect_timeout: seconds to wait for a connection to the remote.
        read_timeout: seconds to wait for each read from the remote.
        object_deadline: seconds after which retrying one object stops: a remote that
            stops answering fails the step in about this time.
    """
    import logging

    from components.dvc_pull.pull import pull

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = pull(
        repo_url=repo_url,
        rev=rev,
        paths=paths,
        output_dir=dataset.path,
        remote=remote,
        remote_config=remote_config,
        jobs=jobs,
        cache_dir=cache_dir,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        object_deadline=object_deadline,
    )
    dataset.metadata.update(result.metadata())
