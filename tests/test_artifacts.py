"""Atomic artifact writes: a failed step never leaves an output that looks complete."""

from __future__ import annotations

import pytest

from components.common.artifacts import atomic_directory


def test_atomic_directory_publishes_only_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []

    with atomic_directory(target) as staging:
        (staging / "whole.bin").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["whole.bin"]

    with atomic_directory(target) as staging:  # a retry replaces the earlier result whole
        (staging / "new.bin").write_bytes(b"y")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
