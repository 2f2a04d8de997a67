"""KFP component: resolve a branch or tag to a commit SHA, so that caching keys on the data's commit."""

from kfp import dsl

from components.common.descriptions import described
from components.common.git import REPOSITORY_INPUTS
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described(REPOSITORY_INPUTS)
def resolve_revision(repo_url: str, rev: str) -> str:
    """Resolves ``rev`` to the commit it names now in ``repo_url`` (``git ls-remote``, no clone).

    Run it with caching off and pass its output to ``dvc_pull``'s ``rev``: the
    cache key of ``dvc_pull`` and of every step after it then holds the commit,
    so a new data commit on a branch is never served from cache.

    Returns:
        Output: The commit SHA (a full or abbreviated SHA is returned as given, lower-cased).
    """
    from components.resolve_revision.revision import resolve_commit

    commit = resolve_commit(repo_url, rev)
    print(f"{rev} is commit {commit}")
    return commit
