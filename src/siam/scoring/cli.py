"""``siam score``: batch-score images into resumable Parquet part files (see :mod:`siam.scoring.batch`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.scoring.batch import IMAGE_EXTENSIONS, MANIFEST, ScoreSummary, score_images
from siam.scoring.inputs import DEFAULT_PART_SIZE, MIN_PART_SIZE, TARGET_PARTS, iter_inputs
from siam.scoring.inference import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score many images with a checkpoint into Parquet part files plus a manifest (one row per "
        "input: path, status, error, score, presence_<attribute>, contribution_<attribute>). "
        f"INPUT is a directory (searched recursively for {', '.join(IMAGE_EXTENSIONS)}), one image, "
        "or a text file with one path per line (relative to the file; '#' comments). Images that "
        "cannot be decoded become status=error rows. After an interruption (even kill -9), rerun "
        "the same command with --resume. Several processes: 'torchrun --nproc-per-node N -m siam.cli "
        "score ...', 'srun siam score ...', or --devices N; each scores its own parts, and --resume "
        "may use another number of processes."
    )
    parser.add_argument("input", metavar="INPUT", help="image directory, image file, or text list of paths")
    parser.add_argument("--checkpoint", required=True, help="model file (.safetensors or .ckpt) or the folder 'siam train --out' wrote")
    parser.add_argument("--out", required=True, help="output folder (new or empty, or the one to resume)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader decoding processes per process (default: CPU count / processes on this "
                        "node - 1, at most 8; 0 = in process)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run in --out")
    parser.add_argument("--maps", choices=["none", "npz"], default="none",
                        help="also save the attribute maps (B, K, m, m) per part as NPZ (SIAM only)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="auto: bf16 where native (CUDA bf16, CPU AVX512-BF16/AMX), else fp32")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available; cuda:LOCAL_RANK with several processes), cpu, cuda, cuda:N")
    parser.add_argument("--part-size", type=int, default=None,
                        help=f"rows per Parquet part file, the unit of work and of resuming (default: about "
                        f"{TARGET_PARTS} parts, {MIN_PART_SIZE} to {DEFAULT_PART_SIZE} rows each); fixed for a run")
    parser.add_argument("--devices", type=int, default=1,
                        help="start this many local processes (one per GPU, or CPU slots); not under torchrun/srun")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help=f"reject larger images as errors (default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress (default: a live bar on a terminal, plain lines in a log)")


def model_note(checkpoint: str, inputs: Iterable[str]) -> tuple[dict[str, Any], str | None]:
    """(what the checkpoint was trained on, the note for these inputs or None): a model trained on
    synthetic scenes gets a note unless every input lies in a ``siam synth`` world. ``inputs`` is
    streamed; each distinct folder is checked once."""
    from siam.checkpoint import read_meta
    from siam.provenance import is_synthetic, synthetic_note, trained_on

    meta = read_meta(checkpoint)
    record = trained_on(meta)
    summary = {k: record[k] for k in ("kind", "summary")}
    if not is_synthetic(record):
        return summary, None
    seen: set[str] = set()
    for path in inputs:
        folder = str(Path(path).parent)
        if folder in seen:
            continue
        seen.add(folder)
        note = synthetic_note(meta, folder)
        if note is not None:
            return summary, note
    return summary, None


def run(args: argparse.Namespace) -> int:
    from siam.scoring.distributed import rank_from_env

    provenance, note = model_note(args.checkpoint, iter_inputs(args.input))
    if note is not None and not getattr(args, "_note_shown", False) and rank_from_env().rank == 0:
        print(f"siam score: WARNING: {note}", file=sys.stderr)
    if args.devices != 1:
        from siam.scoring.distributed import launch_local

        local = argparse.Namespace(**{**vars(args), "devices": 1, "_note_shown": True})
        code = launch_local(args.devices, run, local)
        if code == 0:
            from siam.scoring.batch import read_manifest

            manifest = read_manifest(args.out)
            print(f"siam score: {args.devices} processes done; {len(manifest['parts'])} of {manifest['num_parts']} "
                  f"parts in {args.out}" + (" (complete)" if manifest["complete"] else ""))
        return code
    summary = score_images(
        args.checkpoint, args.input, args.out,
        batch_size=args.batch_size, workers=args.workers, resume=args.resume, maps=args.maps,
        precision=args.precision, device=args.device, part_size=args.part_size,
        max_megapixels=args.max_megapixels, progress=False if args.no_progress else None,
        manifest_extra={"model_trained_on": provenance, "note": note},
    )
    report(summary)
    if note is not None and summary.rank == 0:
        print(f"siam score: WARNING (also in {Path(summary.out) / MANIFEST}): {note}", file=sys.stderr)
    return 0


def report(summary: ScoreSummary) -> None:
    """Print what this process did and, once the job is complete, the whole job's counts."""
    who = "" if summary.world_size == 1 else f"rank {summary.rank} of {summary.world_size}: "
    print(
        f"{who}scored {summary.ok + summary.errors} inputs into {summary.out}: {summary.ok} ok, {summary.errors} "
        f"errors, {summary.parts_written} part(s) written now, precision {summary.precision}, "
        f"{summary.seconds:.1f} s"
    )
    for message in summary.error_examples:
        print(f"  error: {message}")
    if summary.errors > len(summary.error_examples):
        print(f"  ... and {summary.errors - len(summary.error_examples)} more (status='error' rows)")
    if summary.complete:
        print(f"{who}job complete: {summary.num_inputs} inputs, {summary.job_ok} ok, {summary.job_errors} errors, "
              f"{summary.parts} part(s); read with pyarrow.dataset.dataset({str(summary.out)!r})")
    else:
        print(f"{who}job: {summary.parts_done} of {summary.parts} parts done (other ranks still running, or "
              "finish with --resume)")
