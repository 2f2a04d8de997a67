"""resolve_revision against a real git repository: branches, tags, SHAs and clear failures."""

from __future__ import annotations

import subprocess

import pytest

from components.resolve_revision.revision import RevisionError, resolve_commit


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("revisions") / "repo"
    root.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "--quiet", "--initial-branch=main")
    git("config", "user.email", "test@example.invalid")
    git("config", "user.name", "test")
    (root / "a.txt").write_text("one")
    git("add", "a.txt")
    git("commit", "--quiet", "-m", "one")
    first = git("rev-parse", "HEAD")
    git("tag", "-a", "v1", "-m", "annotated tag")
    (root / "a.txt").write_text("two")
    git("commit", "--quiet", "-am", "two")
    return root, first, git("rev-parse", "HEAD")


def test_a_branch_resolves_to_its_current_commit(repo):
    root, _, second = repo
    assert resolve_commit(str(root), "main") == second
    assert resolve_commit(str(root), "refs/heads/main") == second
    assert resolve_commit(str(root), "HEAD") == second


def test_an_annotated_tag_resolves_to_its_commit_not_the_tag_object(repo):
    root, first, _ = repo
    assert resolve_commit(str(root), "v1") == first


def test_commit_shas_are_returned_as_given(repo):
    root, first, _ = repo
    assert resolve_commit(str(root), first.upper()) == first
    assert resolve_commit(str(root), first[:10]) == first[:10]


def test_an_unknown_revision_names_the_known_branches_and_tags(repo):
    root, _, _ = repo
    with pytest.raises(RevisionError, match=r"unknown revision 'nope'.*main, v1"):
        resolve_commit(str(root), "nope")


def test_a_missing_repository_fails_at_once_with_gits_whole_message(tmp_path):
    with pytest.raises(RevisionError) as raised:
        resolve_commit(str(tmp_path / "missing"), "main")
    message = str(raised.value)
    assert "cannot list the refs of" in message
    # git says it in several lines; all of them are kept, not only "and the repository exists."
    assert "does not appear to be a git repository" in message and "the repository exists" in message


class StatusServer:
    """An HTTP git host that answers every request with one status: 503 (busy) or 404 (no such repo)."""

    def __init__(self, status: int):
        import http.server
        import threading

        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/team/data.git"

    def close(self):
        self.server.shutdown()


def test_a_busy_server_is_retried_then_named(monkeypatch, caplog):
    from components.common import git
    from components.resolve_revision.revision import RepositoryUnavailable

    monkeypatch.setattr(git, "RETRY_DEADLINE_SECONDS", 5.0)
    server = StatusServer(503)
    try:
        with pytest.raises(RepositoryUnavailable, match=r"returned error: 503.*gave up after 2 attempts"):
            resolve_commit(server.url, "main")
    finally:
        server.close()
    assert server.requests == 2  # retried once after 2 s, then the 5 s deadline left no room for the next wait
    assert [r.getMessage() for r in caplog.records if "retry in" in r.getMessage()] == [
        f"git ls-remote {server.url} failed (fatal: unable to access '{server.url}/': "
        "The requested URL returned error: 503); attempt 1, retry in 2 s"
    ]


def test_a_repository_the_server_does_not_have_is_not_retried():
    server = StatusServer(404)
    try:
        with pytest.raises(RevisionError, match=r"fatal: repository .* not found"):
            resolve_commit(server.url, "main")
    finally:
        server.close()
    assert server.requests == 1


def test_credentials_in_the_url_are_refused_and_never_echoed():
    with pytest.raises(ValueError, match="embeds credentials") as error:
        resolve_commit("https://user:hunter2@example.invalid/repo.git", "main")
    assert "hunter2" not in str(error.value)
