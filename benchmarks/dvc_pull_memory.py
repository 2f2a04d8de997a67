"""Peak RSS of dvc_pull against stock ``dvc pull`` for two 1 GiB files from a gs:// remote (fake-gcs-server).

Each command runs as a fresh process started by a bare launcher (see ``_LAUNCHER``); its peak RSS is the
``ru_maxrss`` that ``os.wait4`` returns for it (on Linux the largest resident set of the process or of any
process it waited for, in KiB), so no figure includes another's or this process's. fake-gcs-server runs
as a process of its own (filesystem backend, under the work directory) and is not counted. What is
written, at most 6 GiB at once, is removed at the end.

    .venv/bin/python -m benchmarks.dvc_pull_memory [WORKDIR]    # default .local/bench
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from components.common.resources import format_bytes
from pipelines.demo_data import dvc, git
from tests.support.fake_gcs import FakeGcs

FILES = 2
FILE_BYTES = 1 << 30
CHUNK = 8 << 20
JOBS = 8
TARGET_BYTES = 200 << 20
# At most 6 GiB at once (source, its cache and the server's copy; later the server's copy and one pull,
# stock's being cache and workspace), plus margin.
NEEDED_FREE_BYTES = 8 << 30
REMOTE_URL = "gs://bench/memory"
PROJECT = Path(__file__).resolve().parents[1]


def _write_random(path: Path, size: int) -> None:
    """``size`` random bytes, written 8 MiB at a time (never the whole file in memory)."""
    with open(path, "wb") as handle:
        for _ in range(size // CHUNK):
            handle.write(os.urandom(CHUNK))
        handle.write(os.urandom(size % CHUNK))


def _use_server(repo: Path, server: FakeGcs) -> None:
    """The committed remote, pointed at the fake server in the checkout's local config (as a user would)."""
    dvc("remote", "modify", "--local", "storage", "endpointurl", server.url, cwd=repo)
    dvc("remote", "modify", "--local", "storage", "allow_anonymous_login", "true", cwd=repo)


def _source_repo(root: Path, server: FakeGcs) -> tuple[Path, float]:
    """A git repository whose DVC directory ``data/big`` holds two 1 GiB random files, pushed to the server."""
    repo = root / "repo"
    data = repo / "data" / "big"
    data.mkdir(parents=True)
    git("init", "-q", "--initial-branch=main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "--default", "storage", REMOTE_URL, cwd=repo)
    for i in range(FILES):
        _write_random(data / f"part-{i}.bin", FILE_BYTES)
    dvc("add", "-q", "data/big", cwd=repo)
    git("add", ".dvc/config", ".dvcignore", "data/.gitignore", "data/big.dvc", cwd=repo)
    git("commit", "-q", "-m", "two 1 GiB files", cwd=repo)
    _use_server(repo, server)
    began = time.perf_counter()
    dvc("push", "-q", "-j", str(JOBS), cwd=repo)
    pushed = time.perf_counter() - began
    # Only git is needed from here on: drop the workspace copy and the cache (4 GiB) before pulling.
    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    return repo, pushed


# Linux keeps the largest resident set a process had before exec: a child started straight from this
# process (vfork or fork) would report this process's own RSS as its floor. So a bare interpreter forks
# and execs the command and reads its ru_maxrss with wait4; the floor is then that of `python -S`.
_LAUNCHER = """\
import os, sys, time
began = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {time.perf_counter() - began}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _measure(args: list[str], cwd: Path, scratch: Path) -> dict:
    """Run ``args`` as a fresh process; its own peak RSS (bytes, it or any process it waited for) and wall time."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    figures = scratch / "rusage.txt"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(figures), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    kib, wall = figures.read_text().split()
    figures.unlink()
    return {"peak_rss": int(kib) * 1024, "wall_s": float(wall)}


def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def run(workdir: str | Path) -> dict:
    # gcsfs probes each bucket's type, which fake-gcs-server does not answer (dvc push then hangs).
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    if free < NEEDED_FREE_BYTES:
        return {
            "skipped": f"{format_bytes(free)} free under {workdir}, "
            f"the benchmark needs {format_bytes(NEEDED_FREE_BYTES)}"
        }
    root = workdir / "dvc-pull-memory"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    python = sys.executable
    try:
        with FakeGcs(root / "gcs") as server:
            server.client().create_bucket("bench")
            began = time.perf_counter()
            repo, pushed = _source_repo(root, server)
            prepared = time.perf_counter() - began

            import_only = _measure([python, "-c", "import components.dvc_pull.pull"], PROJECT, root)
            dvc_import_only = _measure([python, "-c", "import dvc.repo, dvc_gs"], PROJECT, root)

            ours_dir = root / "ours"
            code = (
                "from components.dvc_pull.pull import pull\n"
                f"pull({str(repo)!r}, 'main', ['data/big'], {str(ours_dir)!r}, "
                f"remote_config={{'endpointurl': {server.url!r}, 'allow_anonymous_login': 'true'}}, jobs={JOBS})\n"
            )
            ours = _measure([python, "-c", code], PROJECT, root)
            ours["bytes"] = _tree_bytes(ours_dir / "data" / "big")
            shutil.rmtree(ours_dir)

            clone = root / "stock"
            git("clone", "-q", str(repo), str(clone), cwd=root)
            _use_server(clone, server)
            stock = _measure([python, "-m", "dvc", "pull", "-q", "-j", str(JOBS)], clone, root)
            stock["bytes"] = _tree_bytes(clone / "data" / "big")
            shutil.rmtree(clone)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    expected = FILES * FILE_BYTES
    for name, row in (("dvc_pull", ours), ("dvc pull", stock)):
        if row["bytes"] != expected:
            raise RuntimeError(f"{name} wrote {row['bytes']} bytes, expected {expected}")
    return {
        "files": FILES,
        "file_bytes": FILE_BYTES,
        "jobs": JOBS,
        "prepare_s": prepared,
        "push_s": pushed,
        "import_only": import_only,
        "dvc_import_only": dvc_import_only,
        "ours": ours,
        "stock": stock,
        "ratio": ours["peak_rss"] / stock["peak_rss"],
        "target_bytes": TARGET_BYTES,
    }


def report(result: dict) -> None:
    if "skipped" in result:
        print(f"dvc_pull memory: skipped, {result['skipped']}")
        return
    mib = 1 << 20
    print(
        f"dvc_pull memory: {result['files']} x {format_bytes(result['file_bytes'])} random files, one DVC directory, "
        f"gs:// on fake-gcs-server (filesystem backend), jobs={result['jobs']}; peak RSS of each child process"
    )
    rows = (
        ("import components.dvc_pull.pull only", result["import_only"]),
        ("import dvc.repo, dvc_gs only", result["dvc_import_only"]),
        (f"dvc_pull (pull(..., jobs={result['jobs']}))", result["ours"]),
        (f"stock `dvc pull -j {result['jobs']}`", result["stock"]),
    )
    for label, row in rows:
        print(f"  {label:<38} {row['peak_rss'] / mib:8.0f} MiB  {row['wall_s']:7.2f} s")
    met = "met" if result["ours"]["peak_rss"] < result["target_bytes"] else "MISSED"
    print(
        f"  ratio dvc_pull/stock (peak RSS) {result['ratio']:8.3f}   "
        f"(target: dvc_pull < {result['target_bytes'] // mib} MiB, {met})"
    )
    print(
        f"  setup: generate, dvc add and commit {result['prepare_s']:.0f} s, of which dvc push {result['push_s']:.0f} s"
    )


def main() -> None:
    report(run(sys.argv[1] if len(sys.argv) > 1 else ".local/bench"))


if __name__ == "__main__":
    main()
