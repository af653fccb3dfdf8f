"""How many CPU cores this process may really use.

``os.cpu_count()`` counts the machine's cores. Under SLURM, taskset, Docker or Kubernetes a process
is often allowed far fewer: by its CPU affinity (``sched_getaffinity``) and by a cgroup v2 CPU quota
(``cpu.max``: ``"<quota> <period>"``, or ``"max <period>"`` for none). Sizing threads and worker
processes by the machine's count then oversubscribes the allowed cores.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cores"]

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quota_cores(cpu_max: Path) -> int | None:
    """Cores allowed by a cgroup v2 quota (rounded up), or None without one (or unreadable)."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def usable_cores(*, cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """min(cores in this process's affinity mask, cgroup v2 CPU quota), at least 1."""
    cores = max(1, _affinity_cores())
    quota = _quota_cores(cpu_max)
    return min(cores, quota) if quota is not None else cores
