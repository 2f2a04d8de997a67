"""dvc_pull's logic against real git, real DVC, a local remote and a fake GCS server."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from components.dvc_pull.checks import validate_inputs
from components.dvc_pull.errors import DvcPullError, DvcPullInputError
from components.dvc_pull.pull import pull
from components.dvc_pull.redaction import redact_url
from tests.support.trees import leftovers, same_tree


def dvc_md5(repo: Path, path: str) -> str:
    return yaml.safe_load((repo / f"{path}.dvc").read_text())["outs"][0]["md5"]


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert leftovers(out.parent, out.name) == []
    if out.parent.exists():
        assert list(out.parent.glob(".dvc-pull-*")) == []


def test_pull_from_local_remote(digits_repo, tmp_path):
    out = tmp_path / "dataset"
    result = pull(digits_repo.repo_url, "main", [digits_repo.data_path], out)

    repo = Path(digits_repo.repo_url)
    assert result.commit == digits_repo.commit
    assert result.md5 == {"data/raw": dvc_md5(repo, "data/raw")}
    assert result.md5["data/raw"].endswith(".dir")
    assert same_tree(out / "data/raw", repo / "data/raw")
    files = [p for p in (out / "data/raw").rglob("*") if p.is_file()]
    assert result.file_count == len(files) == 1797 + 2  # images, labels.csv, classes.txt
    assert result.total_bytes == sum(p.stat().st_size for p in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no work directories left behind
    assert json.loads(json.dumps(result.metadata()))["file_count"] == result.file_count


def test_pull_by_tag_and_by_commit(digits_repo, tmp_path):
    repo = Path(digits_repo.repo_url)
    subprocess.run(["git", "tag", "-f", "v1"], cwd=repo, check=True, capture_output=True)
    by_tag = pull(digits_repo.repo_url, "v1", ["data/raw"], tmp_path / "tag")
    by_sha = pull(digits_repo.repo_url, digits_repo.commit[:10], ["data/raw"], tmp_path / "sha")
    assert by_tag.commit == by_sha.commit == digits_repo.commit


def test_unknown_revision(digits_repo, tmp_path):
    with pytest.raises(DvcPullError, match=r"unknown revision 'no-such-branch'.*known branches and tags: .*main"):
        pull(digits_repo.repo_url, "no-such-branch", ["data/raw"], tmp_path / "out")
    assert_no_output(tmp_path / "out")


@pytest.fixture(scope="module")
def plain_git_repo(tmp_path_factory) -> Path:
    """A git repository with data in data/raw but no DVC at all."""
    repo = tmp_path_factory.mktemp("no-dvc") / "repo"
    (repo / "data/raw").mkdir(parents=True)
    (repo / "data/raw/a.txt").write_text("a\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "data without DVC"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    return repo


@pytest.mark.parametrize(
    "remote_config",
    [{}, {"url": "http://127.0.0.1:9/store"}],
    ids=["the direct path", "DVC's path"],  # an http remote would go to DVC's own transfer
)
def test_a_repository_without_dvc_is_named_with_how_to_track_the_data(plain_git_repo, tmp_path, remote_config):
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=plain_git_repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    with pytest.raises(DvcPullInputError) as raised:
        pull(str(plain_git_repo), "main", ["data/raw"], tmp_path / "out", remote_config=remote_config)
    message = str(raised.value)
    assert message.startswith(
        f"{plain_git_repo} at revision 'main' (commit {commit[:12]}) has no .dvc directory at its root: it is not a "
        "DVC repository, so DVC tracks none of 'data/raw'."
    )
    for step in ("`dvc init`", "`dvc remote add -d storage <url>`", "`dvc add data/raw`", "`dvc push`", "`git commit`"):
        assert step in message
    assert "NotDvcRepoError" not in message and raised.value.__cause__ is None
    assert_no_output(tmp_path / "out")


def test_path_not_tracked(digits_repo, tmp_path):
    with pytest.raises(DvcPullError, match=r"path 'data' is not tracked by DVC.*tracked paths: data/raw"):
        pull(digits_repo.repo_url, "main", ["data"], tmp_path / "out")
    assert_no_output(tmp_path / "out")


def test_unreachable_local_remote(digits_repo, tmp_path):
    missing = tmp_path / "no-such-remote"
    with pytest.raises(DvcPullError, match=rf"remote 'storage' \({missing}\) does not exist"):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config={"url": str(missing)})
    assert_no_output(tmp_path / "out")


def test_unknown_remote_name(digits_repo, tmp_path):
    with pytest.raises(DvcPullError, match=r"unknown DVC remote 'backup'; configured remotes: storage"):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote="backup")


def test_object_missing_from_remote(digits_repo, tmp_path):
    remote = tmp_path / "remote"
    subprocess.run(["cp", "-r", str(digits_repo.remote_dir), str(remote)], check=True)
    labels_md5 = json.loads(next(p for p in remote.rglob("*.dir")).read_text())
    victim = next(entry for entry in labels_md5 if entry["relpath"] == "images/0042.png")
    (remote / "files/md5" / victim["md5"][:2] / victim["md5"][2:]).unlink()

    with pytest.raises(DvcPullError, match=rf"1 object\(s\) missing.*data/raw/images/0042.png \(md5 {victim['md5']}\)"):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config={"url": str(remote)})
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"repo_url": "https://user:hunter2@example.com/repo.git"}, r"embeds credentials"),
        ({"rev": "--upload-pack=evil"}, r"not a valid git revision"),
        ({"paths": []}, r"non-empty list"),
        ({"paths": "data/raw"}, r"non-empty list"),
        ({"paths": ["../etc"]}, r"stay inside it"),
        ({"paths": ["/data"]}, r"relative to the repository root"),
        ({"jobs": 0}, r"jobs must be an integer >= 1, got 0"),
        ({"remote_config": {"secret_access_key": "x"}}, r"'secret_access_key' is a credential"),
        ({"paths": ["data/raw", "data/raw/images"]}, r"path 'data/raw' is given twice or contains 'data/raw/images'"),
        ({"paths": ["data/raw", "data/raw/"]}, r"path 'data/raw' is given twice"),
        ({"read_timeout": 0}, r"read_timeout must be a number of seconds in \(0, 3600\], got 0"),
        ({"object_deadline": "60"}, r"object_deadline must be a number of seconds .*got '60'"),
        ({"connect_timeout": True}, r"connect_timeout must be a number"),
    ],
)
def test_bad_parameters_fail_before_any_work(kwargs, message):
    arguments = {"repo_url": "https://example.com/repo.git", "rev": "main", "paths": ["data/raw"]} | kwargs
    with pytest.raises(DvcPullError, match=message):
        validate_inputs(**arguments)
    if "repo_url" in kwargs:
        with pytest.raises(DvcPullError) as caught:
            validate_inputs(**arguments)
        assert "hunter2" not in str(caught.value)


def test_redact_url():
    assert redact_url("https://user:pw@host:8443/r.git") == "https://***@host:8443/r.git"
    assert redact_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"


# --- gs:// remote on fake-gcs-server, real dvc-gs and google-cloud-storage ---------------------------


def test_pull_from_gcs_remote(digits_repo, gcs_remote, tmp_path):
    out = tmp_path / "dataset"
    result = pull(digits_repo.repo_url, "main", ["data/raw"], out, remote_config=gcs_remote, jobs=4)
    assert same_tree(out / "data/raw", Path(digits_repo.repo_url) / "data/raw")
    assert result.md5 == {"data/raw": dvc_md5(Path(digits_repo.repo_url), "data/raw")}


def test_gcs_remote_unreachable_fails_fast(digits_repo, tmp_path):
    settings = {"url": "gs://dvc-test/store", "endpointurl": "http://127.0.0.1:9", "allow_anonymous_login": "true"}
    began = time.monotonic()
    with pytest.raises(DvcPullError, match=r"is unreachable: cannot connect to 127.0.0.1:9"):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings)
    assert time.monotonic() - began < 60  # a guard against client retries, not a timing target
    assert_no_output(tmp_path / "out")


def test_gcs_object_missing(digits_repo, gcs_remote, fake_gcs, tmp_path):
    bucket = fake_gcs.client().bucket("dvc-test")
    # A copy of the remote with one object deleted.
    for blob in bucket.list_blobs(prefix="store/"):
        bucket.copy_blob(blob, bucket, "broken/" + blob.name.removeprefix("store/"))
    manifest = next(b for b in bucket.list_blobs(prefix="broken/") if b.name.endswith(".dir"))
    victim = next(e for e in json.loads(manifest.download_as_bytes()) if e["relpath"] == "images/0007.png")
    bucket.blob(f"broken/files/md5/{victim['md5'][:2]}/{victim['md5'][2:]}").delete()

    settings = gcs_remote | {"url": "gs://dvc-test/broken"}
    with pytest.raises(
        DvcPullError, match=r"missing from DVC remote 'storage' \(gs://dvc-test/broken\).*images/0007.png"
    ):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings)
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"credentials file .* does not exist"),
        ("{not json", r"is not a readable JSON key file"),
        (json.dumps({"type": "banana"}), r"has type 'banana'; expected one of service_account"),
        (json.dumps({"type": "service_account"}), r"without client_email or private_key"),
    ],
)
def test_bad_gcs_credentials(digits_repo, gcs_remote, tmp_path, monkeypatch, content, message):
    key_file = tmp_path / "key.json"
    if content is not None:
        key_file.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    settings = {k: v for k, v in gcs_remote.items() if k != "allow_anonymous_login"}
    with pytest.raises(DvcPullError, match=message) as caught:
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings)
    assert "{not json" not in str(caught.value)  # never echo credential content
    assert_no_output(tmp_path / "out")


def test_missing_gcs_credentials(digits_repo, tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server here
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    with pytest.raises(DvcPullError, match=r"no GCS credentials: set GOOGLE_APPLICATION_CREDENTIALS"):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config={"url": "gs://bucket/x"})
    assert_no_output(tmp_path / "out")


def test_relative_repository_path(digits_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(digits_repo.repo_url).parent)
    result = pull(Path(digits_repo.repo_url).name, "main", ["data/raw"], tmp_path / "out")
    assert result.commit == digits_repo.commit
