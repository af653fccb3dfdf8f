"""Run the benchmarks and print their ratios: ``python -m benchmarks [NAME ...] [--quick]``.

Names: data, explain, inference, scoring, training, distributed (default: all, in that order). Results are
also written as JSON (``--json``, default ``benchmarks/latest.json``) with the environment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

BENCHMARKS = {
    "data": "benchmarks.bench_data",
    "explain": "benchmarks.bench_explain",
    "inference": "benchmarks.bench_inference",
    "scoring": "benchmarks.bench_scoring",
    "training": "benchmarks.bench_training",
    "distributed": "benchmarks.bench_distributed",
}
HEADER = "| bench | figure | value | goal | met | note |\n| --- | --- | --- | --- | --- | --- |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"subset of {list(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads (default: all cores)")
    parser.add_argument("--json", default=str(Path(__file__).with_name("latest.json")), help="where to write results")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; allowed: {list(BENCHMARKS)}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    import torch

    from benchmarks.common import environment

    torch.set_num_threads(args.threads)
    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    results = []
    started = time.perf_counter()
    for name in args.names or list(BENCHMARKS):
        t0 = time.perf_counter()
        module = importlib.import_module(BENCHMARKS[name])
        rows = module.run(quick=args.quick)
        torch.set_num_threads(args.threads)
        print(f"\n[{name}] {time.perf_counter() - t0:.0f} s\n{HEADER}", flush=True)
        for row in rows:
            print(row.row(), flush=True)
        results += rows
    total = time.perf_counter() - started
    print(f"\nall done in {total:.0f} s; load average at the end {os.getloadavg()[0]:.1f}")
    missed = [r for r in results if r.passed is False]
    if missed:
        print("goals missed: " + "; ".join(f"{r.bench}: {r.name} = {r.value:.3g} (goal {r.goal})" for r in missed))
    Path(args.json).write_text(json.dumps({"environment": env, "seconds": total, "quick": args.quick,
                                           "results": [r.to_dict() for r in results]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
