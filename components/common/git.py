"""Run git non-interactively: a missing credential fails at once instead of waiting for a prompt.

Also the clone a pull starts from: the repository without a work tree (``clone_at``), the
few files read straight from git objects (``read_blobs``), and a checkout where one is needed.

Talking to a remote, git's failures are told apart: the network's or the server's (a name that
does not resolve, a reset, a timeout, HTTP 5xx or 429) are retried with backoff for a bounded time;
the user's (a repository that does not exist, refused credentials, an unknown revision) fail at
once, with git's whole message.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

NON_INTERACTIVE = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
# The inputs of the steps that read the data's repository (resolve_revision, dvc_pull), described once.
REPOSITORY_INPUTS = {
    "repo_url": "The git repository (https, ssh or a path) that tracks the data with DVC; it must not embed "
    "credentials.",
    "rev": "A branch, tag, HEAD or commit SHA of repo_url.",
}
TRANSIENT_FAILURE = re.compile(
    r"could not resolve (host|proxy)|temporary failure in name resolution|connection (timed out|refused|reset)"
    r"|operation timed out|failed to connect|couldn't connect|early eof|rpc failed|the remote end hung up"
    r"|returned error: (5\d\d|429)|gnutls|ssl_error|tls connection",
    re.IGNORECASE,
)
RETRY_DEADLINE_SECONDS = 120.0


class GitError(Exception):
    """git failed; ``transient`` when for the network's or the server's sake (worth retrying), not the user's."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def run_git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    """``git *args``; output as text, or as bytes when ``input`` (bytes) is given."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **NON_INTERACTIVE},
        input=input,
        capture_output=True,
        text=input is None,
    )


def is_local_path(repo_url: str) -> bool:
    return "://" not in repo_url and Path(repo_url).exists()


def absolute_if_local(repo_url: str) -> str:
    """A relative local repository path made absolute (git may run from another directory); URLs as given."""
    return str(Path(repo_url).resolve()) if is_local_path(repo_url) else repo_url


def git_message(stderr: str, limit: int = 2000) -> str:
    """git's whole error output on one line (hints dropped), for an error message."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip() and not line.startswith("hint:")]
    message = " / ".join(lines) or "no error output"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def is_transient(stderr: str) -> bool:
    """Whether git failed for the network's or the server's sake (worth retrying), not the user's."""
    return bool(TRANSIENT_FAILURE.search(stderr))


def run_git_remote(
    *args: str,
    what: str,
    cwd: Path | None = None,
    deadline_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> subprocess.CompletedProcess:
    """``git *args`` against a remote; a transient failure is retried (2, 4, 8 … 30 s apart) until
    ``deadline_seconds``, with one log line per retry. Any other failure returns at once."""
    deadline_seconds = RETRY_DEADLINE_SECONDS if deadline_seconds is None else deadline_seconds
    began, delay, attempt = time.monotonic(), 2.0, 1
    while True:
        done = run_git(*args, cwd=cwd)
        if done.returncode == 0 or not is_transient(done.stderr):
            return done
        if time.monotonic() - began + delay > deadline_seconds:
            done.stderr += f"\n(gave up after {attempt} attempts in {time.monotonic() - began:.0f} s)"
            return done
        log.warning("%s failed (%s); attempt %d, retry in %.0f s", what, git_message(done.stderr, 300), attempt, delay)
        sleep(delay)
        attempt, delay = attempt + 1, min(delay * 2, 30.0)


def unknown_revision_message(rev: str, repo: str, known: list[str]) -> str:
    """The error for a revision that is neither a known branch or tag nor a commit; lists what is known."""
    return (
        f"unknown revision {rev!r} in {repo}; known branches and tags: {', '.join(known) or '(none)'}, "
        "or give a commit SHA"
    )


def clone_at(repo_url: str, rev: str, destination: Path, shown_as: str) -> str:
    """Clone ``repo_url`` into ``destination`` without a work tree; return the commit SHA of ``rev``.

    A repository behind a URL is cloned without file contents (``--filter=blob:none``, where the
    server allows it): the few files read later are fetched on demand. ``shown_as`` is how messages
    name the repository (its URL with any credentials masked). A clone that fails, or a revision
    the repository does not have, raises ``GitError`` (the latter listing the branches and tags).
    """
    options = ["--quiet", "--no-checkout"]
    if is_local_path(repo_url):
        repo_url = absolute_if_local(repo_url)  # a relative path: git runs from another directory
    else:
        options.append("--filter=blob:none")
    cloned = run_git_remote(
        "clone", *options, repo_url, str(destination), cwd=destination.parent, what=f"git clone {shown_as}"
    )
    if cloned.returncode != 0:
        raise GitError(
            f"cannot clone {shown_as}: {git_message(cloned.stderr)}; check the URL and that "
            "the repository is reachable from this pod",
            transient=is_transient(cloned.stderr),
        )
    commit = None
    for candidate in (rev, f"origin/{rev}"):
        parsed = run_git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=destination)
        if parsed.returncode == 0:
            commit = parsed.stdout.strip()
            break
    if commit is None and re.fullmatch(r"[0-9a-fA-F]{7,40}", rev):
        # A commit that no branch or tag advertises can still be fetched by SHA.
        if run_git("fetch", "--quiet", "origin", rev, cwd=destination).returncode == 0:
            commit = run_git("rev-parse", "FETCH_HEAD", cwd=destination).stdout.strip()
    if commit is None:
        refs = run_git("for-each-ref", "--format=%(refname:short)", "refs/remotes/origin", "refs/tags", cwd=destination)
        known = sorted(r.removeprefix("origin/") for r in refs.stdout.split() if r != "origin/HEAD" and r != "origin")
        raise GitError(unknown_revision_message(rev, shown_as, known))
    return commit


def checkout(destination: Path, commit: str) -> None:
    """Check ``commit`` out in the clone ``destination``; ``GitError`` saying why not."""
    checked_out = run_git("checkout", "--quiet", "--detach", commit, cwd=destination)
    if checked_out.returncode != 0:
        raise GitError(f"cannot check out {commit}: {git_message(checked_out.stderr)}")


def is_directory(clone: Path, commit: str, path: str) -> bool:
    """Whether ``path`` is a directory in the tree of ``commit``, read from git without a checkout."""
    found = run_git("cat-file", "-t", f"{commit}:{path}", cwd=clone)
    return found.returncode == 0 and found.stdout.strip() == "tree"


def read_blobs(clone: Path, commit: str, names: Sequence[str]) -> dict[str, bytes | None]:
    """The content of each file at ``commit`` (None where absent), read from git without a checkout."""
    request = "".join(f"{commit}:{name}\n" for name in names).encode()
    done = run_git("cat-file", "--batch", cwd=clone, input=request)
    blobs: dict[str, bytes | None] = dict.fromkeys(names)
    if done.returncode != 0:
        return blobs
    out, position = done.stdout, 0
    for name in names:
        end = out.find(b"\n", position)
        if end < 0:
            break
        header = out[position:end].split()
        position = end + 1
        if len(header) == 3 and header[2].isdigit():
            size = int(header[2])
            if header[1] == b"blob":
                blobs[name] = out[position : position + size]
            position += size + 1
    return blobs
