"""Write artifact directories so that a failed step never leaves one that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_directory(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory that becomes ``final_path`` only on success.

    The staging directory is a sibling of ``final_path`` (same filesystem), so
    publishing is a single rename. If the body raises, the staging directory is
    removed and ``final_path`` is left as it was: absent, or the result of an
    earlier successful attempt.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published artifact should not be
    try:
        yield staging
        if final.is_dir():
            # An earlier attempt's output (or an empty placeholder) is replaced whole.
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as pretty JSON; readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
