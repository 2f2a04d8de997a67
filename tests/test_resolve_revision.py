"""resolve_revision against a real git repository: branches, tags, SHAs and clear failures."""

from __future__ import annotations

import subprocess

import pytest

from components.resolve_revision.revision import RevisionError, resolve_revision


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
    assert resolve_revision(str(root), "main") == second
    assert resolve_revision(str(root), "refs/heads/main") == second
    assert resolve_revision(str(root), "HEAD") == second


def test_an_annotated_tag_resolves_to_its_commit_not_the_tag_object(repo):
    root, first, _ = repo
    assert resolve_revision(str(root), "v1") == first


def test_commit_shas_are_returned_as_given(repo):
    root, first, _ = repo
    assert resolve_revision(str(root), first.upper()) == first
    assert resolve_revision(str(root), first[:10]) == first[:10]


def test_an_unknown_revision_names_the_known_branches_and_tags(repo):
    root, _, _ = repo
    with pytest.raises(RevisionError, match=r"unknown revision 'nope'.*main, v1"):
        resolve_revision(str(root), "nope")


def test_an_unreachable_repository_fails_with_gits_reason(tmp_path):
    with pytest.raises(RevisionError, match="cannot list the refs of"):
        resolve_revision(str(tmp_path / "missing"), "main")


def test_credentials_in_the_url_are_refused_and_never_echoed():
    with pytest.raises(ValueError, match="embeds credentials") as error:
        resolve_revision("https://user:hunter2@example.invalid/repo.git", "main")
    assert "hunter2" not in str(error.value)
