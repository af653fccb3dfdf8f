"""Shared pieces of ``siam explain``, ``siam figures`` and ``siam report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from siam.checkpoint import load_checkpoint
from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.errors import CheckpointError
from siam.explain.explanation import model_identity
from siam.models.baseline import Baseline
from siam.models.siam import SIAM

#: File endings a directory is searched for (case-insensitive); explicitly named files are always tried.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")


def add_model_arguments(parser: argparse.ArgumentParser, *, baseline_help: str) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="C", help="SIAM model file (.safetensors/.ckpt) or a 'siam train --out' folder")
    parser.add_argument("--baseline", metavar="B", default=None, help=baseline_help)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
                        help=f"reject larger images (decompression-bomb guard; default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--device", default="auto", metavar="DEV",
                        help="torch device for the models: auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: not a torch device: {name!r}; allowed: auto, cpu, cuda, cuda:N, mps") from None


def load_models(args: argparse.Namespace) -> tuple[SIAM, dict[str, Any], Baseline | None, dict[str, Any] | None]:
    """(SIAM, its identity, baseline or None, its identity or None) from ``--checkpoint``/``--baseline``."""
    device = _device(args.device)
    model = load_checkpoint(args.checkpoint)
    if not isinstance(model, SIAM):
        raise CheckpointError(
            f"--checkpoint {args.checkpoint}: is a {model.config.kind} model; it must be a SIAM model "
            "(pass a baseline with --baseline)"
        )
    ident = model_identity(model, checkpoint=args.checkpoint)
    baseline = base_ident = None
    if args.baseline is not None:
        b = load_checkpoint(args.baseline)
        if not isinstance(b, Baseline):
            raise CheckpointError(f"--baseline {args.baseline}: is a {b.config.kind} model, not a baseline")
        baseline, base_ident = b.to(device).eval(), model_identity(b, checkpoint=args.baseline)
    return model.to(device).eval(), ident, baseline, base_ident


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """``(path, problem)`` per input: directories become their image files (recursively, sorted;
    by the endings :data:`IMAGE_SUFFIXES`); a directory without images is one entry with a problem."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                (f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda f: f.relative_to(p).as_posix(),
            )
            if not found:
                out.append((item, f"directory has no image files (looked for {', '.join(IMAGE_SUFFIXES)})"))
            out += [(str(f), None) for f in found]
        else:
            out.append((item, None))
    return out


def unique_stems(paths: list[str]) -> list[str]:
    """An output name per path: the file stem, made unique with the ending and then a counter."""
    seen: set[str] = set()
    stems = []
    for path in paths:
        p = Path(path)
        candidates = [p.stem or "image", f"{p.stem}_{p.suffix.lstrip('.')}" if p.suffix else p.stem]
        stem = next((c for c in candidates if c not in seen), None)
        n = 2
        while stem is None or stem in seen:
            stem = f"{candidates[0]}_{n}"
            n += 1
        seen.add(stem)
        stems.append(stem)
    return stems
