"""CPUs and memory the pod may really use, read from its cgroup (v2 and v1), not from the node."""

from __future__ import annotations

import os

import pytest

from components.common.resources import (
    cgroup_cpu_limit,
    cgroup_memory_limit,
    format_bytes,
    intra_op_threads,
    memory_limit,
    parse_quantity,
    usable_cpus,
)


def cgroup(tmp_path, files: dict[str, str]):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    return tmp_path


@pytest.mark.parametrize(
    "files, cpus",
    [
        ({"cpu.max": "250000 100000"}, 2.5),  # v2: a limit of 2.5 CPUs
        ({"cpu.max": "max 100000"}, None),  # v2: no limit
        ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, 4.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1: no limit
        ({}, None),
    ],
)
def test_cpu_limit_from_the_cgroup(tmp_path, files, cpus):
    assert cgroup_cpu_limit(cgroup(tmp_path, files)) == cpus


def test_usable_cpus_is_the_quota_rounded_up_within_the_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(cgroup(tmp_path / "a", {"cpu.max": "50000 100000"})) == 1
    assert usable_cpus(cgroup(tmp_path / "b", {"cpu.max": "150000 100000"})) == min(2, affinity)
    assert usable_cpus(cgroup(tmp_path / "c", {"cpu.max": "9600000 100000"})) == affinity  # 96 CPUs on a small node
    assert usable_cpus(cgroup(tmp_path / "d", {})) == affinity


def test_a_lone_process_takes_omp_num_threads_and_several_share_the_cpus():
    cpus = usable_cpus()
    assert intra_op_threads(1, {}) == cpus
    assert intra_op_threads(1, {"OMP_NUM_THREADS": "3"}) == 3
    assert intra_op_threads(1, {"OMP_NUM_THREADS": "4,2"}) == 4
    # torchrun's default for several processes on one pod is 1 each: they share the pod's CPUs instead.
    assert intra_op_threads(2, {"OMP_NUM_THREADS": "1"}) == max(1, cpus // 2)
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=rf"OMP_NUM_THREADS='{bad}': expected a whole number >= 1"):
            intra_op_threads(1, {"OMP_NUM_THREADS": bad})


@pytest.mark.parametrize(
    "files, limit",
    [
        ({"memory.max": "17179869184"}, 16 * 2**30),
        ({"memory.max": "max"}, None),
        ({"memory/memory.limit_in_bytes": "8589934592"}, 8 * 2**30),
        ({"memory/memory.limit_in_bytes": "9223372036854771712"}, None),  # v1's "unlimited"
    ],
)
def test_memory_limit_from_the_cgroup(tmp_path, files, limit):
    root = cgroup(tmp_path, files)
    assert cgroup_memory_limit(root) == limit
    total, source = memory_limit(root)
    assert (source == "the pod's memory limit") == (limit is not None) and total > 0


@pytest.mark.parametrize(
    "text, value", [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1048576", 2**20), ("1.5Gi", 3 * 2**29)]
)
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "2 GB", "-1Gi", "Gi", ""])
def test_bad_quantities_are_named(text):
    with pytest.raises(ValueError, match=r"must be a Kubernetes quantity such as '512Mi'"):
        parse_quantity(text, "memory_budget")


def test_format_bytes():
    assert [format_bytes(n) for n in (512, 2048, 5 * 2**30)] == ["512 B", "2.0 KiB", "5.0 GiB"]
