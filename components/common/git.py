"""Run git non-interactively: a missing credential fails at once instead of waiting for a prompt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

NON_INTERACTIVE = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


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


def last_line(text: str) -> str:
    """The last non-empty line of git's error output: the one that says what went wrong."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def unknown_revision_message(rev: str, repo: str, known: list[str]) -> str:
    """The error for a revision that is neither a known branch or tag nor a commit; lists what is known."""
    return (
        f"unknown revision {rev!r} in {repo}; known branches and tags: {', '.join(known) or '(none)'}, "
        "or give a commit SHA"
    )
