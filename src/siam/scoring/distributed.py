"""Which process of a scoring job this is, and ``siam score --devices N`` (N local processes).

A job's processes coordinate through files in the output folder only (see
:mod:`siam.scoring.batch`); no process group is created. The rank comes from the launcher's
environment:

* ``torchrun`` (and ``--devices N``): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``;
* SLURM ``srun``: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID`` and
  ``SLURM_STEP_TASKS_PER_NODE`` (set by ``srun`` only, so a batch script that calls ``siam score``
  directly is one process, not rank 0 of the allocation);
* neither: one process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from siam.errors import SiamError
from siam.resources import usable_cores

__all__ = ["RankInfo", "rank_from_env", "launch_local", "default_workers"]

_MAX_DEFAULT_WORKERS = 8
_POLL_S = 0.2


@dataclass(frozen=True)
class RankInfo:
    """``rank`` of ``world_size`` processes; ``local_rank`` of ``local_world_size`` on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise SiamError(f"bad process rank {self.rank} of world size {self.world_size}: need 0 <= rank < size")
        if self.local_world_size < 1 or not 0 <= self.local_rank < self.local_world_size:
            raise SiamError(f"bad local rank {self.local_rank} of {self.local_world_size} processes on this node")


def _int(env: Mapping[str, str], key: str) -> int:
    value = env[key]
    match = re.match(r"\s*(\d+)", value)  # SLURM_STEP_TASKS_PER_NODE looks like '4(x2),3'
    if match is None:
        raise SiamError(f"environment variable {key}={value!r} is not a number")
    return int(match.group(1))


def rank_from_env(env: Mapping[str, str] | None = None) -> RankInfo:
    """The :class:`RankInfo` of this process from torchrun's or srun's variables (see module doc)."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else max(1, local + 1)
        return RankInfo(rank, world, local, local_world)
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        per_node = _int(env, "SLURM_STEP_TASKS_PER_NODE") if "SLURM_STEP_TASKS_PER_NODE" in env else local + 1
        return RankInfo(_int(env, "SLURM_PROCID"), _int(env, "SLURM_STEP_NUM_TASKS"), local, max(per_node, local + 1))
    return RankInfo()


def default_workers(local_world_size: int = 1) -> int:
    """DataLoader decoding processes per rank: this node's cores shared by its ranks, minus the
    rank's own process, at most 8 (0 decodes in the rank's process)."""
    return max(0, min(_MAX_DEFAULT_WORKERS, usable_cores() // local_world_size - 1))


def launch_local(n: int, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                 command: str = "siam score") -> int:
    """Run ``run(args)`` in ``n`` new processes with ranks 0..n-1 (as torchrun would set them).

    If one fails, the others are stopped and its exit code is returned; each prints its own
    errors. Torch threads per process default to this machine's cores / ``n`` (``OMP_NUM_THREADS``
    overrides)."""
    if n < 1:
        raise SiamError(f"--devices must be >= 1, got {n}")
    if rank_from_env().world_size > 1:
        raise SiamError("--devices N starts its own processes; it cannot be used under torchrun or srun "
                        "(which already started several)")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(r, n, run, args, command), name=f"siam-rank{r}") for r in range(n)]
    for p in procs:
        p.start()
    try:
        while True:
            codes = [p.exitcode for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                break
            if all(c == 0 for c in codes):
                return 0
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        failed = [130]
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    for p in procs:
        p.join()
    code = failed[0]
    return 128 - code if code < 0 else code  # killed by signal s -> 128 + s, like a shell


def _child(rank: int, n: int, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
           command: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(n))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, usable_cores() // n))
    try:
        code = int(run(args) or 0)
    except (SiamError, ValueError, FileNotFoundError) as exc:
        print(f"{command}: error (rank {rank} of {n}): {exc}", file=sys.stderr, flush=True)
        code = 2
    sys.stdout.flush()
    sys.exit(code)
