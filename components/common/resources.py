"""What this pod may really use: CPUs from its cgroup quota, memory from its cgroup limit.

``os.cpu_count()`` and ``/proc/meminfo`` describe the node, not the pod: a pod
limited to 4 CPUs on a 96-core node that starts 96 DataLoader workers (or 96
intra-op threads) thrashes. These read the container's own cgroup (v2, then
v1), fall back to the process's CPU affinity and the machine's memory, and
never raise.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
MULTIPLIERS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The CPU quota in CPUs (e.g. 2.5), or None when the cgroup sets none."""
    v2 = _read(root / "cpu.max")  # "max 100000" or "250000 100000"
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def usable_cpus(root: Path = CGROUP) -> int:
    """Whole CPUs this process may keep busy: the cgroup quota (rounded up) within its CPU affinity."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        available = min(available, math.ceil(limit))
    return max(1, available)


def cpus_each(processes: int = 1) -> int:
    """The usable CPUs shared out between ``processes`` processes on this pod, at least one each."""
    return max(1, usable_cpus() // max(1, processes))


def intra_op_threads(local_processes: int = 1, environ=os.environ) -> int:
    """Intra-op threads for each of ``local_processes`` training processes sharing this pod.

    A process alone on its pod takes ``OMP_NUM_THREADS`` when it is set, as PyTorch does. Several share the
    usable CPUs out, at least one each: torchrun sets ``OMP_NUM_THREADS=1`` for them when it is unset, which
    would leave most of a pod's CPUs idle.
    """
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if local_processes == 1 and given:
        outermost = given.split(",")[0].strip()  # "4,2": 4 threads, 2 in each nested region
        if not outermost.isdigit() or int(outermost) < 1:
            raise ValueError(f"OMP_NUM_THREADS={given!r}: expected a whole number >= 1, such as 4 (or a list: 4,2)")
        return int(outermost)
    return cpus_each(local_processes)


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """The container's memory limit in bytes, or None when unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        raw = _read(path)
        if raw and raw != "max":
            value = int(raw)
            # cgroup v1 reports "no limit" as a huge page-aligned number.
            return value if value < 2**62 else None
    return None


def machine_memory() -> int:
    """Total memory of the machine in bytes (``MemTotal``)."""
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(root: Path = CGROUP) -> tuple[int, str]:
    """(bytes, where they come from): the cgroup limit when set, else the machine's memory."""
    limit = cgroup_memory_limit(root)
    if limit is not None:
        return limit, "the pod's memory limit"
    return machine_memory(), "the machine's memory (no cgroup limit)"


def parse_quantity(value: str, what: str = "quantity") -> int:
    """A Kubernetes memory quantity ("512Mi", "2Gi", "1G", "1048576") in bytes."""
    match = QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(
            f"{what} must be a Kubernetes quantity such as '512Mi', '2Gi' or a number of bytes, got {value!r}"
        )
    return int(float(match.group(1)) * MULTIPLIERS[match.group(2)])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
