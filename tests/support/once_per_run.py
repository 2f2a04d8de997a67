"""Session fixtures made once per ``pytest`` run, however many xdist workers share it.

Each worker is a process of its own with its own session: a plain session fixture would train the same
models once per worker. :func:`made_once` makes the thing under the run's temporary root, under a file lock,
and every other worker reads back what the first one recorded.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def run_root(tmp_path_factory) -> Path:
    """The run's temporary root: every xdist worker's own base directory sits directly under it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory, name: str, make: Callable[[Path], object]) -> object:
    """``make(directory)``'s JSON-able result, made in ``directory`` by the first worker to ask."""
    root = run_root(tmp_path_factory)
    directory, recorded = root / f"once-{name}", root / f"once-{name}.json"
    with FileLock(str(root / f"once-{name}.lock")):
        if not recorded.exists():
            shutil.rmtree(directory, ignore_errors=True)  # what a worker that failed half-way left
            directory.mkdir()
            recorded.write_text(json.dumps(make(directory)))
    return json.loads(recorded.read_text())
