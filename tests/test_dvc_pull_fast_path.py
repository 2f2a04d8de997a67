"""dvc_pull's direct object fetch: same bytes as `dvc pull`, verified md5, cache reuse, resume, fallback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from components.dvc_pull.errors import DvcPullError
from components.dvc_pull.pull import pull
from tests.support.trees import leftovers, same_tree


def copy_remote(fake_gcs, source: str, target: str) -> None:
    bucket = fake_gcs.client().bucket("dvc-test")
    for blob in bucket.list_blobs(prefix=f"{source}/"):
        bucket.copy_blob(blob, bucket, f"{target}/" + blob.name.removeprefix(f"{source}/"))


def manifest_entries(fake_gcs, prefix: str) -> list[dict]:
    bucket = fake_gcs.client().bucket("dvc-test")
    manifest = next(b for b in bucket.list_blobs(prefix=f"{prefix}/") if b.name.endswith(".dir"))
    return json.loads(manifest.download_as_bytes())


def object_name(prefix: str, md5: str) -> str:
    return f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}"


def test_same_files_byte_for_byte_as_dvc_pull(digits_repo, gcs_remote, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", digits_repo.repo_url, str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    for key, value in gcs_remote.items():
        subprocess.run([*dvc, "remote", "modify", "--local", "storage", key, value], cwd=clone, check=True)
    subprocess.run([*dvc, "pull", "-q", "-j", "4", "data/raw"], cwd=clone, check=True)

    result = pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=gcs_remote)
    assert same_tree(tmp_path / "out/data/raw", clone / "data/raw")
    assert result.fetched_objects == 1799  # every file (the directory listing comes first, uncounted)
    assert result.cached_objects == 0


def test_corrupt_object_names_the_file_and_both_checksums(digits_repo, gcs_remote, fake_gcs, tmp_path):
    copy_remote(fake_gcs, "store", "corrupt")
    victim = next(e for e in manifest_entries(fake_gcs, "corrupt") if e["relpath"] == "images/0100.png")
    fake_gcs.client().bucket("dvc-test").blob(object_name("corrupt", victim["md5"])).upload_from_string(b"garbage")
    expected_bad = hashlib.md5(b"garbage").hexdigest()
    settings = gcs_remote | {"url": "gs://dvc-test/corrupt"}
    with pytest.raises(
        DvcPullError, match=rf"data/raw/images/0100.png is corrupt .*expected md5 {victim['md5']}, got {expected_bad}"
    ):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_interrupted_pull_resumes_fetching_only_what_was_missing(digits_repo, gcs_remote, fake_gcs, tmp_path):
    copy_remote(fake_gcs, "store", "partial")
    bucket = fake_gcs.client().bucket("dvc-test")
    entries = manifest_entries(fake_gcs, "partial")
    held_back = entries[::2]  # as if the first attempt died halfway: these never arrived
    saved = {e["md5"]: bucket.blob(object_name("partial", e["md5"])).download_as_bytes() for e in held_back}
    for md5 in saved:
        bucket.blob(object_name("partial", md5)).delete()
    settings = gcs_remote | {"url": "gs://dvc-test/partial"}
    cache = tmp_path / "shared-cache"  # e.g. a PVC

    with pytest.raises(DvcPullError, match=rf"{len(saved)} object\(s\) missing"):
        pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings, cache_dir=str(cache))
    assert not (tmp_path / "out").exists()

    for md5, data in saved.items():
        bucket.blob(object_name("partial", md5)).upload_from_string(data)
    result = pull(
        digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings, cache_dir=str(cache)
    )
    assert result.fetched_objects == len(saved)
    assert result.cached_objects == len(entries) - len(saved)
    assert same_tree(tmp_path / "out/data/raw", Path(digits_repo.repo_url) / "data/raw")

    again = pull(
        digits_repo.repo_url, "main", ["data/raw"], tmp_path / "again", remote_config=settings, cache_dir=str(cache)
    )
    assert again.fetched_objects == 0 and again.cached_objects == len(entries)
    assert (cache / "files/md5" / entries[0]["md5"][:2] / entries[0]["md5"][2:]).is_file()  # DVC's layout
    assert same_tree(tmp_path / "again/data/raw", tmp_path / "out/data/raw")


def test_the_log_is_short(digits_repo, gcs_remote, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=gcs_remote)
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(records) <= 12, [r.getMessage() for r in records]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_remote_without_a_fast_path_falls_back_to_dvc_and_says_so(digits_repo, tmp_path, caplog):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(digits_repo.remote_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    caplog.set_level(logging.INFO)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config={"url": url})
    finally:
        server.shutdown()
    assert "no fast path for http remotes: using DVC's own transfer" in caplog.text
    assert result.fetched_objects == -1
    assert same_tree(tmp_path / "out/data/raw", Path(digits_repo.repo_url) / "data/raw")


# --- the fast path reads outputs and remote settings straight from git --------------------------------


def test_fast_path_needs_neither_dvc_nor_a_checkout(digits_repo, tmp_path):
    """A file:// URL takes the partial-clone branch; DVC is never imported."""
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from components.dvc_pull.pull import pull\n"
        f"result = pull('file://{digits_repo.repo_url}', 'main', ['data/raw'], {str(out)!r})\n"
        "print(result.fetched_objects, result.file_count, sorted(m for m in sys.modules if m.split('.')[0] == 'dvc'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == "1799 1799 []"
    assert same_tree(out / "data/raw", Path(digits_repo.repo_url) / "data/raw")


def _clone_with_config(digits_repo, tmp_path, extra_config: str = "", dvc_file=None) -> Path:
    source = tmp_path / "source"
    subprocess.run(["git", "clone", "-q", digits_repo.repo_url, str(source)], check=True)
    with open(source / ".dvc/config", "a") as config:
        config.write(extra_config)
    if dvc_file is not None:
        (source / "data/raw.dvc").write_text(dvc_file((source / "data/raw.dvc").read_text()))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "-q", "-am", "config"], cwd=source, check=True)
    return source


def test_remote_named_in_the_parameter(digits_repo, tmp_path):
    backup = tmp_path / "backup"
    subprocess.run(["cp", "-r", str(digits_repo.remote_dir), str(backup)], check=True)
    entries = json.loads(next(backup.rglob("*.dir")).read_text())
    victim = next(e for e in entries if e["relpath"] == "images/0003.png")
    (backup / "files/md5" / victim["md5"][:2] / victim["md5"][2:]).unlink()
    source = _clone_with_config(digits_repo, tmp_path, f"['remote \"backup\"']\n    url = {backup}\n")

    with pytest.raises(DvcPullError, match=r"missing from DVC remote 'backup'.*images/0003.png"):
        pull(str(source), "main", ["data/raw"], tmp_path / "out", remote="backup")
    result = pull(str(source), "main", ["data/raw"], tmp_path / "out", remote="storage")
    assert result.remote == "storage" and result.fetched_objects == len(entries)
    assert same_tree(tmp_path / "out/data/raw", Path(digits_repo.repo_url) / "data/raw")


def test_outputs_beyond_the_plain_case_go_through_dvc(digits_repo, tmp_path, caplog):
    """An output field the direct reader does not know (here `desc`): DVC resolves it, objects still come fast."""
    source = _clone_with_config(digits_repo, tmp_path, dvc_file=lambda text: text + "  desc: the digits\n")
    caplog.set_level(logging.DEBUG, logger="components.dvc_pull.pull")
    result = pull(str(source), "main", ["data/raw"], tmp_path / "out")
    assert "DVC resolves them" in caplog.text
    assert result.fetched_objects == 1799
    assert same_tree(tmp_path / "out/data/raw", Path(digits_repo.repo_url) / "data/raw")


@pytest.fixture
def token_server():
    """An OAuth token endpoint on 127.0.0.1 that grants any signed assertion; counts its calls."""
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            body = json.dumps({"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/token", calls
    server.shutdown()


@pytest.mark.parametrize("via", ["credentialpath", "GOOGLE_APPLICATION_CREDENTIALS"])
def test_service_account_key_file(digits_repo, gcs_remote, token_server, tmp_path, monkeypatch, via):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    token_uri, calls = token_server
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file = tmp_path / "key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test",
                "private_key_id": "1",
                "private_key": private_key.decode(),
                "client_email": "puller@test.iam.gserviceaccount.com",
                "token_uri": token_uri,
            }
        )
    )
    settings = {k: v for k, v in gcs_remote.items() if k != "allow_anonymous_login"}
    if via == "credentialpath":
        settings["credentialpath"] = str(key_file)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    else:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    result = pull(digits_repo.repo_url, "main", ["data/raw"], tmp_path / "out", remote_config=settings)
    assert result.fetched_objects == 1799
    assert len(calls) == 1  # one token for every request
