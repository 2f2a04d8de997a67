"""dvc_pull against a plain parallel download of the same objects from a gs:// remote (fake-gcs-server)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from components.dvc_pull.pull import pull
from pipelines.demo_data import dvc, git
from tests.support.fake_gcs import FakeGcs

THREADS = 4


def _push(repo: Path, server: FakeGcs, prefix: str) -> dict:
    settings = {"url": f"gs://bench/{prefix}", "endpointurl": server.url, "allow_anonymous_login": "true"}
    dvc("remote", "add", "--local", "-f", "bench", settings["url"], cwd=repo)
    for key in ("endpointurl", "allow_anonymous_login"):
        dvc("remote", "modify", "--local", "bench", key, settings[key], cwd=repo)
    dvc("push", "-q", "-r", "bench", "-j", "8", cwd=repo)
    return settings


def _synthetic_repo(root: Path, files: int) -> Path:
    """``files`` small random files (1-4 KiB, like thumbnails) tracked as one DVC directory."""
    repo = root / f"synthetic-{files}"
    repo.mkdir(parents=True)
    git("init", "-q", "--initial-branch=main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "--default", "storage", "gs://bench/synthetic", cwd=repo)
    data = repo / "data" / "raw"
    rng = np.random.default_rng(0)
    for i in range(files):
        directory = data / f"{i // 1000:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{i:06d}.bin").write_bytes(rng.bytes(int(rng.integers(1024, 4096))))
    dvc("add", "-q", "data/raw", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "synthetic data", cwd=repo)
    return repo


def _plain_download(server: FakeGcs, prefix: str, destination: Path) -> float:
    """What a hand-written script would do: list the objects, download them with 4 threads."""
    bucket = server.client().bucket("bench")
    began = time.perf_counter()
    blobs = [b for b in bucket.list_blobs(prefix=f"{prefix}/files/md5/") if not b.name.endswith(".dir")]

    def fetch(blob) -> None:
        target = destination / blob.name.replace("/", "_")
        target.write_bytes(blob.download_as_bytes())

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(fetch, blobs))
    return time.perf_counter() - began


def _one_case(repo: Path, server: FakeGcs, prefix: str, work: Path) -> dict:
    settings = _push(repo, server, prefix)
    plain_dir = work / f"plain-{prefix}"
    plain_dir.mkdir()
    plain = _plain_download(server, prefix, plain_dir)
    began = time.perf_counter()
    result = pull(str(repo), "main", ["data/raw"], work / f"pulled-{prefix}", remote_config=settings, jobs=THREADS)
    ours = time.perf_counter() - began
    return {"files": result.file_count, "plain_s": plain, "dvc_pull_s": ours, "ratio": plain / ours}


def run(digits_repo: Path, synthetic_files: int = 20_000) -> dict:
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    with tempfile.TemporaryDirectory(prefix="bench-dvc-") as tmp, FakeGcs() as server:
        work = Path(tmp)
        server.client().create_bucket("bench")
        results = {"digits": _one_case(digits_repo, server, "digits", work)}
        synthetic = _synthetic_repo(work, synthetic_files)
        results["synthetic"] = _one_case(synthetic, server, "synthetic", work)
        return results


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20_000), indent=1))
