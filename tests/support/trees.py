"""Comparing and inspecting output directories: whether two trees hold the same files, and what a failed step left."""

from __future__ import annotations

import filecmp
from pathlib import Path


def same_tree(left: Path, right: Path) -> bool:
    """Whether the two directories hold the same names with the same bytes, all the way down."""
    compared = filecmp.dircmp(left, right)
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, compared.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(left / d, right / d) for d in compared.common_dirs)


def leftovers(parent: Path, name: str) -> list[Path]:
    """Anything under ``parent`` that looks like (part of) the output ``name``."""
    return sorted(p for p in parent.iterdir() if name in p.name) if parent.exists() else []
