"""``siam score``: batch-score images into resumable Parquet part files (see :mod:`siam.scoring.batch`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.scoring.batch import DEFAULT_PART_SIZE, IMAGE_EXTENSIONS, MANIFEST, list_inputs, read_scores, score_images
from siam.scoring.inference import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score many images with a checkpoint into Parquet part files plus a manifest (one row per "
        "input: path, status, error, score, presence_<attribute>, contribution_<attribute>). "
        f"INPUT is a directory (searched recursively for {', '.join(IMAGE_EXTENSIONS)}), one image, "
        "or a text file with one path per line (relative to the file; '#' comments). Images that "
        "cannot be decoded become status=error rows. After an interruption (even kill -9), rerun "
        "the same command with --resume."
    )
    parser.add_argument("input", metavar="INPUT", help="image directory, image file, or text list of paths")
    parser.add_argument("--checkpoint", required=True, help="model file (.safetensors or .ckpt)")
    parser.add_argument("--out", required=True, help="output folder (new or empty, or the one to resume)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader decoding processes (default: CPU count - 1, at most 8; 0 = in process)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run in --out")
    parser.add_argument("--maps", choices=["none", "npz"], default="none",
                        help="also save the attribute maps (B, K, m, m) per part as NPZ (SIAM only)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="auto: bf16 where native (CUDA bf16, CPU AVX512-BF16/AMX), else fp32")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument("--part-size", type=int, default=DEFAULT_PART_SIZE,
                        help=f"rows per Parquet part file (default {DEFAULT_PART_SIZE}); fixed for a run")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help=f"reject larger images as errors (default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress (default: a live bar on a terminal, plain lines in a log)")


def model_note(checkpoint: str, inputs: list[str]) -> tuple[dict[str, Any], str | None]:
    """(what the checkpoint was trained on, the note for these inputs or None): a model trained on
    synthetic scenes gets a note unless every input lies in a ``siam synth`` world."""
    from siam.checkpoint import read_meta
    from siam.provenance import synthetic_note, trained_on

    meta = read_meta(checkpoint)
    record = trained_on(meta)
    notes = {synthetic_note(meta, folder) for folder in {str(Path(p).parent) for p in inputs}}
    notes.discard(None)
    return {k: record[k] for k in ("kind", "summary")}, (notes.pop() if notes else None)


def _record_in_manifest(out: str, extra: dict[str, Any]) -> None:
    """Add ``extra`` to ``OUT/manifest.json`` (atomically; its other keys are kept)."""
    path = Path(out) / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(extra)
    tmp = path.with_name(f".{path.name}.note-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    provenance, note = model_note(args.checkpoint, list_inputs(args.input))
    if note is not None:
        print(f"siam score: WARNING: {note}", file=sys.stderr)
    summary = score_images(
        args.checkpoint, args.input, args.out,
        batch_size=args.batch_size, workers=args.workers, resume=args.resume, maps=args.maps,
        precision=args.precision, device=args.device, part_size=args.part_size,
        max_megapixels=args.max_megapixels, progress=False if args.no_progress else None,
    )
    print(
        f"scored {summary.num_inputs} inputs into {summary.out}: {summary.ok} ok, {summary.errors} "
        f"errors, {summary.parts} part(s) ({summary.parts_written} written now), precision "
        f"{summary.precision}, {summary.seconds:.1f} s"
    )
    if summary.errors:
        table = read_scores(summary.out)
        errors = [e for e in table.column("error").to_pylist() if e is not None]
        for message in errors[:5]:
            print(f"  error: {message}")
        if len(errors) > 5:
            print(f"  ... and {len(errors) - 5} more (status='error' rows)")
    _record_in_manifest(summary.out, {"model_trained_on": provenance, "note": note})
    if note is not None:
        print(f"siam score: WARNING (also in {Path(summary.out) / MANIFEST}): {note}", file=sys.stderr)
    return 0
