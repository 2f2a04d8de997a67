"""Import time and peak RSS of the pytorchjob_train launcher pod, which only talks to the Kubernetes API.

Each figure comes from a fresh process:

- imports: the seconds ``import components.pytorchjob_train.component, components.pytorchjob_train.step`` takes
  (what the pod imports before it sends its first request), the best of ``IMPORT_ROUNDS`` processes, and
  whether torch was among them;
- the whole pod: the component's function with ``launcher="kubeflow"`` against the fake API server, through a
  kubeconfig (``tests/support/launcher_pod.py``), to the model collected; its peak RSS is the ``ru_maxrss`` of
  the process, read with ``os.wait4`` by a bare launcher (as ``benchmarks/dvc_pull_memory.py`` measures), and
  its wall time. The job succeeds 0.6 s after creation; the rest of the wall time is the launcher's 5 s polls.

``--tree DIR`` measures another checkout of the library (e.g. an older commit, exported with ``git archive``):
its ``components`` run in the children; the fake API server is this one's.

    .venv/bin/python -m benchmarks.launcher_footprint [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.dvc_pull_memory import _LAUNCHER as MEASURING_LAUNCHER
from tests.support.fake_kube import FakeKube
from tests.support.fake_pytorchjob import TrainingOperator
from tests.support.launcher_pod import HEAVY_MODULES, LAUNCHER_POD, prepare

PROJECT = Path(__file__).resolve().parents[1]
IMPORT_ROUNDS = 5
IMPORTS = f"""
import json, sys, time
began = time.perf_counter()
import components.pytorchjob_train.component, components.pytorchjob_train.step
seconds = time.perf_counter() - began
print(json.dumps({{"seconds": seconds, "heavy": sorted(n for n in {HEAVY_MODULES!r} if n in sys.modules)}}))
"""


def _environment(tree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    return {**(base or os.environ), "PYTHONPATH": str(tree)}


def _imports(tree: Path) -> dict:
    rounds = []
    for _ in range(IMPORT_ROUNDS):
        done = subprocess.run(
            [sys.executable, "-c", IMPORTS],
            cwd=tree,
            capture_output=True,
            text=True,
            env=_environment(tree),
            check=True,
        )  # cwd: ``python -c`` imports from the working directory first
        rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in rounds), "heavy_modules": rounds[0]["heavy"]}


def _launcher_pod(tree: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="launcher-pod-") as scratch:
        root = Path(scratch) / "pod"
        root.mkdir()
        kube = FakeKube([TrainingOperator()]).start()
        try:
            environment = _environment(tree, prepare(root, kube))
            figures = Path(scratch) / "rusage.txt"
            command = [sys.executable, "-c", LAUNCHER_POD, str(root)]
            done = subprocess.run(
                [sys.executable, "-I", "-S", "-c", MEASURING_LAUNCHER, str(figures), *command],
                cwd=tree,
                env=environment,
                capture_output=True,
                text=True,
            )
        finally:
            kube.stop()
        if done.returncode != 0:
            raise RuntimeError(f"the launcher pod failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        kib, wall = figures.read_text().split()
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_rss": int(kib) * 1024, "wall_s": float(wall), "heavy_modules": report["heavy_modules"]}


def run(tree: str | Path = PROJECT) -> dict:
    tree = Path(tree).resolve()
    return {"tree": str(tree), "imports": _imports(tree), "pod": _launcher_pod(tree)}


def report(result: dict) -> None:
    mib = 1 << 20
    imports, pod = result["imports"], result["pod"]
    print("pytorchjob_train launcher pod (a fresh process each; the fake API server on 127.0.0.1)")
    print(
        f"  imports (component, step)   {imports['seconds']:8.2f} s   best of {IMPORT_ROUNDS}; "
        f"heavy modules: {', '.join(imports['heavy_modules']) or 'none'}"
    )
    print(
        f"  whole pod, one PyTorchJob   {pod['peak_rss'] / mib:8.0f} MiB peak RSS, {pod['wall_s']:.1f} s; "
        f"heavy modules: {', '.join(pod['heavy_modules']) or 'none'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(PROJECT), help="a checkout of the library to measure")
    report(run(parser.parse_args().tree))


if __name__ == "__main__":
    main()
