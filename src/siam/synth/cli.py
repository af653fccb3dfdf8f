"""``siam synth`` on the command line: ``add_arguments(parser)`` and ``run(args) -> int`` around
:func:`siam.synth.world.generate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from siam.resources import usable_cores
from siam.synth.world import DEFAULT_ATTRIBUTES, SynthConfig, generate
from siam.vocab import SUN33

__all__ = ["add_arguments", "run"]


def _parse_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected SIDE or WIDTHxHEIGHT (e.g. 128 or 160x120), got {text!r}")
    return parts[0], parts[1]


def _parse_attributes(text: str) -> tuple[str, ...]:
    key = text.strip().lower()
    if key == "default":
        return DEFAULT_ATTRIBUTES
    if key == "all":
        return SUN33
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SynthConfig()
    parser.add_argument("--out", required=True, type=Path, help="output folder (empty or new)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--n-sun", type=int, default=d.n_sun, help=f"SUN-format images (default {d.n_sun})")
    parser.add_argument("--n-son", type=int, default=d.n_son,
                        help=f"ScenicOrNot-format images (default {d.n_son})")
    parser.add_argument("--size", type=_parse_size, default=d.size, metavar="WxH",
                        help="image size, SIDE or WIDTHxHEIGHT (default 128: the tiny backbone's input)")
    parser.add_argument("--grid", type=int, default=d.grid, help=f"template grid m (default {d.grid})")
    parser.add_argument("--noise", type=float, default=d.noise,
                        help=f"std of one vote around the clean score, rating points (default {d.noise})")
    parser.add_argument("--attributes", type=_parse_attributes, default=d.attributes,
                        help="comma-separated names, 'default' (the visually distinct ones) or 'all' (33)")
    parser.add_argument("--n-son-attributes", type=int, default=d.n_son_attributes,
                        help="at most this many labelled ScenicOrNot test images (default 90)")
    parser.add_argument("--balance", type=float, default=d.balance,
                        help="boost of real label rows with rare attributes, 0 (real marginals) "
                        "to 2 (default 1)")
    parser.add_argument("--decorrelate", action="store_true",
                        help="draw each attribute independently at its ordinary share: a test world "
                        "where no co-occurrence of the ordinary world survives")
    parser.add_argument("--workers", type=int, default=min(2, usable_cores()),
                        help="rendering processes (default 2); the output does not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out, replacing an earlier siam synth output there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = SynthConfig(
        n_sun=args.n_sun, n_son=args.n_son, size=args.size, grid=args.grid, noise=args.noise,
        attributes=args.attributes, n_son_attributes=args.n_son_attributes, balance=args.balance,
        decorrelate=args.decorrelate,
    )
    res = generate(args.out, seed=args.seed, config=config, workers=args.workers,
                   overwrite=args.overwrite, progress=not args.quiet)
    floor = ", ".join(f"{k} {v:.3f}" for k, v in res.noise_floor_rmse.items())
    print(f"wrote {config.n_sun} SUN + {config.n_son} ScenicOrNot images ({config.width}x{config.height}, "
          f"{len(config.attributes)} attributes) to {res.out} in {res.seconds:.1f} s")
    print(f"noise floor RMSE (clean y vs Average): {floor}")
    return 0
