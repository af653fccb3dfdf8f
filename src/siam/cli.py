"""The ``siam`` command line. ``main(argv)`` is callable from tests and returns the exit code.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command is used, so ``siam --help``
stays fast. Errors of type :class:`~siam.errors.SiamError` (and ``ValueError`` raised while
validating input) are printed as one line, without a traceback, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from siam import __version__
from siam.errors import SiamError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("siam.quickstart", "offline end-to-end demo: synth -> train 3 models -> evaluate -> report"),
    "truth": ("siam.truth", "prove the explanations right: planted-truth metrics over seeds, ceilings, controls"),
    "synth": ("siam.synth.cli", "render planted-truth scenes in the real SUN / ScenicOrNot formats"),
    "train": ("siam.training.cli", "train a stage: sun, son-head, joint or baseline (Lightning)"),
    "evaluate": ("siam.evaluation.cli", "RMSE, Kendall's tau, attribute AP, planted-truth recovery"),
    "explain": ("siam.explain.cli", "what-where-how explanation (JSON, NPZ, figure) per image"),
    "figures": ("siam.explain.cli_figures", "model-level figures: templates, co-occurrence, ranking"),
    "report": ("siam.explain.report", "one self-contained HTML report for a checkpoint"),
    "serve": ("siam.serve.cli", "web explorer and REST API for explanations"),
    "score": ("siam.scoring.cli", "batch-score images to Parquet (resumable)"),
    "map": ("siam.scoring.map", "interactive HTML map of predicted scenicness"),
    "export": ("siam.export", "export a model to ONNX"),
    "data": ("siam.data.download", "download the real datasets; convert a synth folder to the CSV format"),
}


def _available(name: str) -> bool:
    """Whether the command's module exists, checked on disk without importing any package
    (so ``siam serve`` never imports ``siam.training``, for instance)."""
    parts = COMMANDS[name][0].split(".")
    base = Path(__file__).resolve().parent.joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siam",
        description="Semantically Interpretable Activation Maps: interpretable scenicness (and "
        "other scores) explained through predefined attributes -- what, where, how much.",
        epilog="Run 'siam COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"siam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        if not _available(name):
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (SiamError, ValueError, FileNotFoundError) as exc:
        print(f"siam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"siam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
