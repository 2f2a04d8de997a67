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

from components.dvc_pull.pull import DvcPullError, pull
from tests.conftest import leftovers
from tests.test_dvc_pull import same_tree


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
