from __future__ import annotations

import os
from pathlib import Path

import pytest

from siam import resources
from siam.resources import usable_cores


@pytest.mark.parametrize(
    "cpu_max,affinity,want",
    [
        ("max 100000\n", 8, 8),  # no quota: the affinity mask
        ("200000 100000\n", 8, 2),  # a 2-core quota on an 8-core mask
        ("150000 100000\n", 8, 2),  # 1.5 cores rounds up
        ("50000 100000\n", 8, 1),  # half a core still gets one
        ("800000 100000\n", 3, 3),  # a quota above the mask: the mask
        ("garbage\n", 4, 4),  # unreadable: ignored
    ],
)
def test_usable_cores_is_the_smaller_of_affinity_and_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, affinity: int, want: int
) -> None:
    f = tmp_path / "cpu.max"
    f.write_text(cpu_max)
    monkeypatch.setattr(resources, "_affinity_cores", lambda: affinity)
    assert usable_cores(cpu_max=f) == want
    assert usable_cores(cpu_max=tmp_path / "absent") == affinity


def test_usable_cores_follows_this_process_affinity() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity on this platform")
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
