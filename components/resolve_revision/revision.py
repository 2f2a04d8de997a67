"""Resolve a git branch or tag to the commit it points at now, without cloning.

The pipelines run this first, uncached, and hand the commit to ``dvc_pull``:
KFP's cache key for ``dvc_pull`` (and everything downstream) then holds the
data's commit, so a new data commit is never served from cache while an
unchanged one is.
"""

from __future__ import annotations

import re

from components.common.git import absolute_if_local, git_message, is_transient, run_git_remote, unknown_revision_message
from components.dvc_pull.checks import validate_inputs
from components.dvc_pull.redaction import redact_url

FULL_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
ABBREVIATED_SHA = re.compile(r"^[0-9a-fA-F]{7,39}$")


class RevisionError(ValueError):
    """The revision or the repository cannot be resolved: the user's to fix, not worth retrying."""


class RepositoryUnavailable(RuntimeError):
    """The repository's server or the network failed for longer than the retries waited."""


def list_refs(repo_url: str) -> dict[str, str]:
    """Every ref the repository advertises (``refs/heads/main`` → SHA; peeled tags end in ``^{}``)."""
    repo_url = absolute_if_local(repo_url)
    listed = run_git_remote("ls-remote", repo_url, what=f"git ls-remote {redact_url(repo_url)}")
    if listed.returncode != 0:
        error = RepositoryUnavailable if is_transient(listed.stderr) else RevisionError
        raise error(
            f"cannot list the refs of {redact_url(repo_url)}: {git_message(listed.stderr)}; check the "
            "URL and that the repository is reachable from this pod"
        )
    refs = {}
    for line in listed.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    return refs


def resolve_commit(repo_url: str, rev: str) -> str:
    """The commit SHA that ``rev`` names in ``repo_url``.

    A full SHA is returned as is; a branch, tag (peeled to its commit) or
    ``HEAD`` is looked up with ``git ls-remote``; an abbreviated SHA that no
    ref matches is returned as is (it names a commit, so it is stable, and
    ``dvc_pull`` resolves it after cloning).
    """
    validate_inputs(repo_url, rev, ["."])
    if FULL_SHA.match(rev):
        return rev.lower()
    refs = list_refs(repo_url)
    for name in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}^{{}}", f"refs/tags/{rev}"):
        if name in refs:
            return refs[name]
    if ABBREVIATED_SHA.match(rev):
        return rev.lower()
    known = sorted(
        {name.removeprefix("refs/heads/").removeprefix("refs/tags/").removesuffix("^{}") for name in refs} - {"HEAD"}
    )
    raise RevisionError(unknown_revision_message(rev, redact_url(repo_url), known))
