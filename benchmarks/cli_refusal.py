"""How long the command line takes to refuse a bad parameter, and to compile: the first thing a user waits for.

Each figure is the wall time of a fresh ``kfp-torch`` process (the median of ``ROUNDS``), with whether it
imported torch:

- ``run FILE --param epochs=0``: typed by the compiled file's inputs, then refused by the range checks;
- ``local --epochs 0``: refused before any data is prepared;
- ``compile``: both pipelines and every component spec written.

Target: a refusal in under 2 s, without torch.

    .venv/bin/python -m benchmarks.cli_refusal
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 5
PROBE = "import runpy, sys; sys.argv = {argv!r}; runpy.run_module('pipelines.cli', run_name='__main__')"
NO_TORCH = "import atexit, sys; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr))"


def _timed(argv: list[str]) -> tuple[float, int, bool]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", f"{NO_TORCH}\n{PROBE.format(argv=['kfp-torch', *argv])}"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    return seconds, done.returncode, done.stderr.strip().splitlines()[-1] == "True"


def _median(argv: list[str]) -> dict:
    runs = [_timed(argv) for _ in range(ROUNDS)]
    return {
        "seconds": statistics.median(seconds for seconds, _, _ in runs),
        "exit_code": runs[0][1],
        "torch": any(torch for _, _, torch in runs),
    }


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="cli-refusal-") as tmp:
        pipelines, components = Path(tmp) / "pipelines", Path(tmp) / "components"
        compile_ = _median(["compile", "--output-dir", str(pipelines), "--components-dir", str(components)])
        training = str(pipelines / "training_pipeline.yaml")
        return {
            "run": _median(["run", training, "--param", "repo_url=https://example.com/d.git", "--param", "epochs=0"]),
            "local": _median(["local", "--epochs", "0"]),
            "compile": compile_,
        }


def report(results: dict) -> None:
    print(f"Command line: wall time of a fresh kfp-torch process (median of {ROUNDS})")
    for name, label in (
        ("run", "run FILE --param epochs=0 "),
        ("local", "local --epochs 0          "),
        ("compile", "compile (all YAML)        "),
    ):
        row = results[name]
        target = "  (target < 2 s)" if name != "compile" else ""
        print(f"  {label} {row['seconds']:6.2f} s  exit {row['exit_code']}  torch imported: {row['torch']}{target}")


def main() -> None:
    report(run())


if __name__ == "__main__":
    main()
