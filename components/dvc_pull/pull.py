"""Pull DVC-tracked paths of a git revision into a directory: the orchestration.

Plain Python, no KFP. ``pull`` checks its parameters (``checks``), clones the repository
without a work tree (``components.common.git``), and takes one of two paths:

- the direct one, wherever DVC's own files can be read without DVC (``dvc_files.plan_direct``):
  the objects come straight from the remote (``remote``, ``materialise``), DVC never imported;
- DVC's, for everything else (``dvc_fallback``), on a checkout of the revision.

The output directory appears only when everything succeeded. Every secret a remote's
settings carry is masked in every error and log line while the pull runs (``redaction``).
Credentials never travel as parameters (see ``checks``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from components.common.artifacts import atomic_directory
from components.common.git import GitError, absolute_if_local, checkout, clone_at, is_directory
from components.dvc_pull.checks import settings_secrets, validate_inputs
from components.dvc_pull.dvc_fallback import pull_with_dvc
from components.dvc_pull.dvc_files import DirectPlan, absolute_remote_paths, plan_direct
from components.dvc_pull.errors import DvcPullError, DvcPullInputError
from components.dvc_pull.redaction import redact_text, redact_url, redacted_logs
from components.dvc_pull.remote import fetch_objects, open_source
from components.dvc_pull.request import PullRequest, PullResult
from components.dvc_pull.sources import Timeouts

log = logging.getLogger(__name__)


def pull(
    repo_url: str,
    rev: str,
    paths: Sequence[str],
    output_dir: str | Path,
    remote: str = "",
    remote_config: Mapping[str, object] | None = None,
    jobs: int = 4,
    cache_dir: str = "",
    connect_timeout: float = 10.0,
    read_timeout: float = 20.0,
    object_deadline: float = 60.0,
) -> PullResult:
    """Pull ``paths`` of ``repo_url`` at ``rev`` into ``output_dir``.

    The output keeps the repository layout (``output_dir/data/raw/...``). It
    appears only when every path was pulled; on any failure it is absent. A path
    may be a DVC output or lie inside a tracked directory (``data/raw/images``).
    ``cache_dir`` points DVC at a shared cache (e.g. on a PVC) so objects
    already there are not fetched again. A remote that stops answering fails the
    pull after ``object_deadline`` seconds on one object, waiting at most
    ``connect_timeout`` for a connection and ``read_timeout`` for each read.
    """
    remote_config = dict(remote_config or {})
    validate_inputs(
        repo_url,
        rev,
        paths,
        remote_config,
        jobs,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        object_deadline=object_deadline,
    )
    with redacted_logs() as secrets:
        secrets |= settings_secrets(remote_config)
        try:
            request = PullRequest(
                repo_url=repo_url,
                rev=rev,
                paths=tuple(paths),
                output_dir=Path(output_dir),
                remote=remote,
                remote_config=MappingProxyType(absolute_remote_paths(remote_config)),
                jobs=jobs,
                cache_dir=cache_dir,
                timeouts=Timeouts(connect_timeout, read_timeout, object_deadline),
            )
            return _pull(request, secrets)
        except DvcPullError as error:
            message = redact_text(str(error), secrets)
            if message == str(error):
                raise
            raise type(error)(message) from None


def _pull(request: PullRequest, secrets: set[str]) -> PullResult:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # gcsfs probes each bucket's type and warns once per file when it cannot; off unless asked for.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

    request.output_dir.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".dvc-pull-", dir=request.output_dir.parent))
    try:
        clone = workdir / "repo"
        shown_as = redact_url(absolute_if_local(request.repo_url))
        try:
            commit = clone_at(request.repo_url, request.rev, clone, shown_as=shown_as)
        except GitError as error:
            raise (DvcPullError if error.transient else DvcPullInputError)(str(error)) from None
        log.info("resolved %s at %s to %s", redact_url(request.repo_url), request.rev, commit)
        if not is_directory(clone, commit, ".dvc"):  # before either path: DVC's would fail with NotDvcRepoError
            raise DvcPullInputError(_not_a_dvc_repository(shown_as, request, commit))
        plan = plan_direct(clone, commit, request)
        if plan is not None:
            secrets |= settings_secrets(plan.settings)
            result = _pull_direct(request, plan, commit, clone)
        else:
            log.debug("outputs or remote settings beyond the direct reader: DVC resolves them")
            try:
                checkout(clone, commit)
            except GitError as error:
                raise DvcPullError(str(error)) from None
            result = pull_with_dvc(request, commit, clone, secrets)
        log.info("pulled %d files, %d bytes from remote %r", result.file_count, result.total_bytes, result.remote)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _not_a_dvc_repository(shown_as: str, request: PullRequest, commit: str) -> str:
    """The error for a revision without a ``.dvc`` directory, and how to put the data under DVC."""
    path = request.paths[0]
    return (
        f"{shown_as} at revision {request.rev!r} (commit {commit[:12]}) has no .dvc directory at its root: it is "
        f"not a DVC repository, so DVC tracks none of {', '.join(map(repr, request.paths))}. To track the data, in a "
        f"clone of the repository: `dvc init`, `dvc remote add -d storage <url>` (e.g. gs://bucket/path), "
        f"`dvc add {path}`, `dvc push`, then `git add .dvc .dvcignore {path}.dvc` (and the .gitignore beside it), "
        "`git commit` and `git push`; pull the new commit"
    )


def _pull_direct(request: PullRequest, plan: DirectPlan, commit: str, clone: Path) -> PullResult:
    """The fast path, DVC not even imported: outputs and remote came from git, objects come from the remote."""
    source = open_source(plan.remote, plan.url, plan.settings, request.jobs, request.timeouts)
    if request.cache_dir:
        cache_root = Path(request.cache_dir).resolve()
    else:
        cache_root = Path(plan.cache_dir or clone / ".dvc" / "cache")
    cache = cache_root / "files" / "md5"  # DVC 3's layout
    with atomic_directory(request.output_dir) as staging:
        stats = fetch_objects(
            source, plan.outputs, cache, staging, plan.remote, plan.url, request.jobs, bool(request.cache_dir)
        )
        return request.result(
            commit, plan.remote, plan.outputs, stats.files, stats.total_bytes, stats.fetched, stats.cached
        )
