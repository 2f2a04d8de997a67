"""Peak memory of training on a dataset whose decoded size is several times the memory budget.

Training runs as the train CLI in its own process; the proportional set size (PSS) of that process
and its DataLoader workers is summed every 50 ms (PSS splits pages the workers share with their
parent, so nothing is counted twice). Runs on the same network: a tiny dataset (the runtime and
the model alone), datasets of about 3.6x and 7.2x the budget streamed under it, and the smaller one
held in memory with the budget lifted.
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


def run(workdir: Path, count: int = 600, budget: str = "24Mi") -> dict:
    """Streamed at two dataset sizes (its peak must not follow the data), held in memory, and the runtime alone."""
    sizes = {count: generate_jpegs(workdir / f"jpegs-{count}", count, seed=1)}
    sizes[2 * count] = generate_jpegs(workdir / f"jpegs-{2 * count}", 2 * count, seed=3)
    small = generate_jpegs(workdir / "jpegs-40", 40, seed=2)
    common = ["--architecture", "mobilenet_v3_small", "--image-size", str(IMAGE_SIZE), "--epochs", "1"]
    common += ["--batch-size", "32", "--test-fraction", "0.0", "--validation-fraction", "0.0"]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        baseline = peak_pss(["--dataset", str(small), "--model", f"{tmp}/a", *common])
        streamed = {
            n: peak_pss(["--dataset", str(root), "--model", f"{tmp}/s{n}", *common, "--memory-budget", budget])
            for n, root in sizes.items()
        }
        in_memory = peak_pss(
            ["--dataset", str(sizes[count]), "--model", f"{tmp}/m", *common, "--memory-budget", "64Gi"]
        )
    limit = parse_quantity(budget)
    return {
        "budget_bytes": limit,
        "baseline_peak": baseline,
        "streamed": [
            {"images": n, "decoded_bytes": n * 3 * IMAGE_SIZE**2, "peak": peak, "growth": peak - baseline}
            for n, peak in streamed.items()
        ],
        "in_memory": {
            "images": count,
            "decoded_bytes": count * 3 * IMAGE_SIZE**2,
            "peak": in_memory,
            "growth": in_memory - baseline,
        },
    }
