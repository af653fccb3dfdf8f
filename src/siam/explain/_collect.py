"""What ``siam figures`` and ``siam report`` share: their common arguments, reading the model(s)
and images they explain (:func:`collect`) and the metrics on labelled images.

Both commands import it; it imports neither (``cli_figures`` and ``report`` used to import each
other).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siam.explain._cli_common import add_model_arguments, expand_inputs, load_models
from siam.explain.batch import ExplainedSet, explain_many
from siam.explain.explanation import error_record

__all__ = ["SPLITS", "add_common_arguments", "collect", "labelled_metrics"]

SPLITS = ("train", "val", "test", "all")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``siam figures`` and ``siam report``."""
    add_model_arguments(parser, baseline_help="baseline model file: adds its metrics, CAMs and the disagreement panels")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="labelled data in the 'siam synth' layout (uses DIR/son: votes.tsv + images/)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="ScenicOrNot split of --data (default test)")
    parser.add_argument("--images", nargs="+", default=[], metavar="IMAGE_OR_DIR",
                        help="unlabelled images or folders to explain")
    parser.add_argument("--max-images", type=int, default=200, metavar="N",
                        help="explain at most the first N images (default 200)")
    parser.add_argument("--panels", type=int, default=4, metavar="N",
                        help="explanation / disagreement panels to draw (default 4)")


def labelled_metrics(explained: ExplainedSet) -> dict[str, dict[str, Any]]:
    """RMSE and Kendall's tau-b of SIAM (and the baseline) against ``explained.labels``."""
    from siam.evaluation.metrics import kendall_tau_b, rmse

    if explained.labels is None or len(explained) == 0:
        return {}
    out = {"SIAM (this data)": {"n": len(explained), "rmse": rmse(explained.scores, explained.labels),
                                "kendall_tau": kendall_tau_b(explained.scores, explained.labels)}}
    b = explained.baseline_scores
    if b is not None:
        out["baseline (this data)"] = {"n": len(explained), "rmse": rmse(b, explained.labels),
                                       "kendall_tau": kendall_tau_b(b, explained.labels)}
    return out


def _flatten(prefix: str, d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(f"{key}.", v))
        elif v is None or isinstance(v, (int, float, str, bool)):
            out[key] = v
    return out


def _checkpoint_metrics(name: str, model: Any) -> dict[str, dict[str, Any]]:
    metrics = (getattr(model, "meta", None) or {}).get("metrics")
    return {name: _flatten("", metrics)} if isinstance(metrics, Mapping) and metrics else {}


def _sources(
    args: argparse.Namespace, notes: list[str]
) -> tuple[list[str], list[float] | None, list[tuple[str, str]]]:
    """(image paths, labels or None, (input, problem) pairs) from --data / --images, at most --max-images."""
    if args.max_images < 1 or args.panels < 0:
        raise ValueError(f"--max-images must be >= 1 and --panels >= 0, got {args.max_images} and {args.panels}")
    paths: list[str] = []
    labels: list[float] | None = None
    problems: list[tuple[str, str]] = []
    if args.data is not None:
        from siam.data.scenic_or_not import ScenicOrNot

        son = Path(args.data) / "son"
        if not son.is_dir():
            raise ValueError(f"--data {args.data}: no 'son' folder; expected the 'siam synth' layout "
                             "(DIR/son/votes.tsv and DIR/son/images/)")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        ds = ScenicOrNot(son, split=args.split, report_path=Path(args.out) / f"missing_images_{args.split}.json")
        paths = [str(p) for p in ds.paths]
        labels = [float(s) for s in ds.scores]
        if ds.missing:
            notes.append(f"{len(ds.missing)} images listed in votes.tsv are missing from {son / 'images'}")
    if args.images:
        if labels is not None:
            raise ValueError("give either --data (labelled) or --images (unlabelled), not both")
        for path, problem in expand_inputs(args.images):
            if problem is None:
                paths.append(path)
            else:
                problems.append((path, f"{path}: {problem}"))
    if len(paths) > args.max_images:
        notes.append(f"used the first {args.max_images} of {len(paths)} images (--max-images)")
        paths = paths[: args.max_images]
        labels = None if labels is None else labels[: args.max_images]
    return paths, labels, problems


def collect(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, ExplainedSet | None, list[str], dict[str, Any]]:
    """-> (model, identity, baseline, explained images or None, notes, metrics)."""
    model, ident, baseline, base_ident = load_models(args)
    notes: list[str] = []
    paths, labels, problems = _sources(args, notes)
    for _, message in problems:
        print(f"siam {args.command}: error: {message}", file=sys.stderr)
    explained = None
    if paths:
        def report(record: dict[str, Any]) -> None:
            print(f"siam {args.command}: error: {record['error']}", file=sys.stderr)

        explained = explain_many(model, paths, baseline=baseline, labels=labels, max_megapixels=args.max_megapixels,
                                 model_id=ident, baseline_id=base_ident, on_error=report, progress=len(paths) > 1)
        explained.failures += [error_record(path, message, model=model, model_id=ident) for path, message in problems]
        if explained.failures:
            notes.append(f"{len(explained.failures)} image(s) could not be read and were left out")
    elif problems:
        explained = ExplainedSet(attributes=tuple(model.attributes),
                                 failures=[error_record(path, message, model=model, model_id=ident)
                                           for path, message in problems])
    metrics = {**_checkpoint_metrics("SIAM (checkpoint)", model)}
    if baseline is not None:
        metrics.update(_checkpoint_metrics("baseline (checkpoint)", baseline))
    if explained is not None:
        metrics.update(labelled_metrics(explained))
    return model, ident, baseline, explained, notes, metrics
