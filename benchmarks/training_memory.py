"""Peak memory of training on a dataset whose decoded size is several times the memory budget.

Training runs as the train CLI in its own process; the proportional set size (PSS) of that process
and its DataLoader workers is summed every 50 ms (PSS splits pages the workers share with their
parent, so nothing is counted twice). Three runs on the same network: a tiny dataset (the runtime
and the model alone), the large one streamed under the budget, and the large one held in memory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.input_pipeline import generate_jpegs
from components.common.resources import parse_quantity

IMAGE_SIZE = 224


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return [pid] + [p for child in children for p in _tree(child)]


def peak_pss(args: list[str]) -> int:
    """Run ``python -m components.train.cli *args``; return the largest summed PSS of its process tree."""
    process = subprocess.Popen(
        [sys.executable, "-m", "components.train.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(_pss(pid) for pid in _tree(process.pid)))
        time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(process.stderr.read().decode()[-2000:])
    return peak


def run(workdir: Path, count: int = 1500, budget: str = "64Mi") -> dict:
    large = generate_jpegs(workdir / f"jpegs-{count}", count, seed=1)
    small = generate_jpegs(workdir / "jpegs-40", 40, seed=2)
    decoded = count * 3 * IMAGE_SIZE * IMAGE_SIZE
    common = ["--architecture", "mobilenet_v3_small", "--image-size", str(IMAGE_SIZE), "--epochs", "1"]
    common += ["--batch-size", "32", "--test-fraction", "0.0", "--validation-fraction", "0.0"]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        baseline = peak_pss(["--dataset", str(small), "--model", f"{tmp}/a", *common])
        streamed = peak_pss(["--dataset", str(large), "--model", f"{tmp}/b", *common, "--memory-budget", budget])
        in_memory = peak_pss(["--dataset", str(large), "--model", f"{tmp}/c", *common, "--memory-budget", "64Gi"])
    limit = parse_quantity(budget)
    return {
        "images": count,
        "decoded_bytes": decoded,
        "budget_bytes": limit,
        "data_over_budget": decoded / limit,
        "baseline_peak": baseline,
        "streamed_peak": streamed,
        "in_memory_peak": in_memory,
        "streamed_growth": streamed - baseline,
        "in_memory_growth": in_memory - baseline,
        "streamed_growth_over_budget": (streamed - baseline) / limit,
    }
