"""``siam explain``: a what-where-how explanation (JSON + NPZ + PNG) per image.

For every input image ``NAME.*`` the output folder gets ``NAME.json`` (score, bias, per-attribute
presence / contribution / rank, top positive and negative attributes, model and preprocessing
identity, the NPZ path, ``error: null``), ``NAME.npz`` (attribute maps and contribution maps) and
``NAME.png`` (the paper's Figs. 5-7 style figure), plus ``summary.json`` listing every input.

A bad file (missing, empty, corrupt, not JPEG/PNG/WebP, too many pixels) gets one line on stderr
and ``NAME.json`` with ``error`` set and null numbers; the other images are still explained.
Interventions (``--remove``, ``--scale``, ``--remove-region``, ``--restrict-top-k``) are exact
(g is linear) and go to stdout and to ``NAME.json["intervention"]``.

Several targets (e.g. beauty and safety): ``NAME.json`` shows one target in its one-target keys
(``--target NAME``, default the model's first) and always carries every target's score, bias and
contributions under ``targets`` (and ``NAME.npz`` every target's contribution maps). Without
``--target`` every target is shown: one figure each, ``NAME.target-<target>.png``, and the
interventions applied to each (``targets[t]["intervention"]``); ``--target`` shows only that one.
A one-target model writes exactly what it always did.

Exit codes: 0 every input explained; 1 at least one input failed (its error record says why) or
an intervention could not be applied to an image (e.g. a region outside it: the explanation is
kept, ``intervention.error`` says why); 2 bad command line or checkpoint (nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from siam.data.images import load_image
from siam.explain._cli_common import add_model_arguments, expand_inputs, load_models, unique_stems
from siam.explain.explanation import error_record, explain, explain_baseline, target_slug
from siam.models.baseline import Baseline
from siam.models.siam import SIAM, target_index

EXIT_OK = 0
EXIT_SOME_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files (JPEG, PNG, WebP) or folders (searched recursively)")
    add_model_arguments(parser, baseline_help="also show this baseline's score and CAM side by side")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="how many top positive / negative attributes the JSON lists (default 5)")
    parser.add_argument("--remove", action="append", default=[], metavar="NAME",
                        help="intervention: remove attribute NAME everywhere (repeatable)")
    parser.add_argument("--scale", action="append", default=[], metavar="NAME=F",
                        help="intervention: multiply NAME's contribution by F (repeatable)")
    parser.add_argument("--remove-region", action="append", default=[], metavar="NAME:x0,y0,x1,y1",
                        help="intervention: remove NAME inside a box in original image pixels (repeatable; "
                        "cells partly inside count by area)")
    parser.add_argument("--restrict-top-k", type=int, default=None, metavar="K",
                        help="intervention: keep only the K attributes with the largest |contribution|")
    parser.add_argument("--target", default=None, metavar="NAME",
                        help="model with several targets: the target the record shows and the figure and "
                        "interventions are about (default: every target, the first shown in the record's "
                        "one-target keys)")
    parser.add_argument("--no-figure", action="store_true", help="skip the PNG figures (faster)")
    parser.epilog = (
        "exit codes: 0 all inputs explained; 1 some inputs failed (one stderr line and an error JSON "
        "each); 2 bad arguments or checkpoint"
    )


def parse_interventions(args: argparse.Namespace, attributes: tuple[str, ...]) -> dict[str, Any] | None:
    """The intervention flags as :meth:`Explanation.intervene` keyword arguments (None if none).
    Raises ``ValueError`` naming the flag, what was received and what is allowed."""
    def known(flag: str, name: str) -> str:
        if name not in attributes:
            raise ValueError(f"{flag}: unknown attribute {name!r}; allowed: {list(attributes)}")
        return name

    remove = [known("--remove", n) for n in args.remove]
    scale: dict[str, float] = {}
    for item in args.scale:
        name, sep, value = item.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not sep or not math.isfinite(factor):
            raise ValueError(f"--scale: expected NAME=FACTOR with a finite number, got {item!r}")
        if known("--scale", name) in scale:
            raise ValueError(f"--scale: attribute {name!r} given twice")
        scale[name] = factor
    regions: dict[str, tuple[float, ...]] = {}
    for item in args.remove_region:
        name, sep, coords = item.rpartition(":")
        try:
            box = tuple(float(v) for v in coords.split(","))
        except ValueError:
            box = ()
        if not sep or len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(
                f"--remove-region: expected NAME:x0,y0,x1,y1 with x0 < x1 and y0 < y1 (original image pixels), "
                f"got {item!r}"
            )
        if known("--remove-region", name) in regions:
            raise ValueError(f"--remove-region: attribute {name!r} given twice (one box per attribute)")
        regions[name] = box
    k = args.restrict_top_k
    if k is not None and k < 0:
        raise ValueError(f"--restrict-top-k: must be >= 0, got {k}")
    if not (remove or scale or regions or k is not None):
        return None
    return {"remove": remove, "scale": scale, "remove_region": regions, "top_k": k}


def run(args: argparse.Namespace) -> int:
    if args.top_k < 0:
        raise ValueError(f"--top-k: must be >= 0, got {args.top_k}")
    model, ident, baseline, base_ident = load_models(args)
    edits = parse_interventions(args, model.attributes)
    try:
        shown = list(model.targets) if args.target is None else [
            model.targets[target_index(model.targets, args.target)]]
    except ValueError as exc:
        raise ValueError(f"--target: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = expand_inputs(args.inputs)
    stems = unique_stems([p for p, _ in items])
    from tqdm import tqdm

    summary: list[dict[str, Any]] = []
    failed = 0
    noted = False
    bar = tqdm(list(zip(items, stems)), desc="explain", unit="image", disable=None if len(items) > 1 else True,
               file=sys.stderr)
    for (path, problem), stem in bar:
        json_path, npz_path, png_path = (out / f"{stem}{ext}" for ext in (".json", ".npz", ".png"))
        record: dict[str, Any]
        try:
            if problem is not None:
                raise ValueError(f"{path}: {problem}")
            record = _explain_one(path, model, ident, baseline, base_ident, args, npz_path, png_path, edits, shown)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            message = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{path}: {type(exc).__name__}: {exc}"
            record = error_record(path, message, model=model, model_id=ident, target=shown[0])
            for leftover in (npz_path, png_path, *(_figure_path(png_path, t) for t in shown)):
                leftover.unlink(missing_ok=True)
        if record.get("note") and not noted:  # once: the same caveat holds for every photograph
            noted = True
            bar.write(f"siam explain: note: {record['note']}", file=sys.stderr)
        intervention = record.get("intervention") or {}
        problem = record["error"] or intervention.get("error")
        if problem is not None:
            failed += 1
            bar.write(f"siam explain: error: {problem}", file=sys.stderr)
        if "score" in intervention:
            for line in _describe_record(record):
                bar.write(line, file=sys.stdout)
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        item = {"image": path, "json": json_path.name, "score": record["score"], "error": record["error"]}
        if "targets" in record:  # several targets: every target's score too
            item["scores"] = {t["name"]: t["score"] for t in record["targets"]}
        summary.append(item)
    (out / "summary.json").write_text(json.dumps({"n_inputs": len(items), "n_failed": failed, "items": summary},
                                                 indent=2) + "\n")
    print(f"siam explain: explained {len(items) - failed} of {len(items)} input(s) into {out}"
          + (f"; {failed} failed (see the error records)" if failed else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _describe_record(record: dict[str, Any]) -> list[str]:
    """One stdout line per target whose intervention was computed."""
    found = [t["intervention"] for t in record.get("targets", []) if "score" in t.get("intervention", {})]
    lines = []
    for it in found or [record["intervention"]]:
        changes = ", ".join(f"{c['name']} {c['change']:+.3f}" for c in it["changes"][:6])
        more = len(it["changes"]) - 6
        what = "score" if "target" not in it else f"{it['target']}"
        lines.append(f"{record['image']}: intervention: {what} {it['original_score']:.3f} -> {it['score']:.3f} "
                     f"({it['delta']:+.3f}); changes: {changes or 'none'}" + (f" (+{more} more)" if more > 0 else ""))
    return lines


def _figure_path(png_path: Path, target: str) -> Path:
    """``NAME.target-<target>.png``: one figure per target of a model with several targets."""
    return png_path.with_name(f"{png_path.stem}.target-{target_slug(target)}.png")


def _explain_one(
    path: str,
    model: SIAM,
    ident: dict[str, Any],
    baseline: Baseline | None,
    base_ident: dict[str, Any] | None,
    args: argparse.Namespace,
    npz_path: Path,
    png_path: Path,
    edits: dict[str, Any] | None,
    shown: list[str],
) -> dict[str, Any]:
    """Explain one file for the ``shown`` targets: write its NPZ (and PNGs); return its JSON record."""
    image = load_image(path, max_megapixels=args.max_megapixels)
    expl = explain(model, image, top_k=args.top_k, name=path, model_id=ident, source=path, target=shown[0])
    views = [expl.for_target(t) for t in shown]
    base = None
    extra: dict[str, Any] = {}
    if baseline is not None:
        base = explain_baseline(baseline, image, name=path, model_id=base_ident)
        extra["baseline_cam"] = base.cam
    expl.save_npz(npz_path, extra=extra)
    record = expl.to_json(maps_path=str(npz_path.resolve()))
    if base is not None:
        record["baseline"] = base.to_json()
    entries = {t["name"]: t for t in record.get("targets", [])}
    if edits is not None:
        for i, view in enumerate(views):
            try:
                it = view.intervene(**edits).to_json()
            except ValueError as exc:  # e.g. a region outside this image: the explanation stands
                it = {"request": edits, "error": f"{path}: intervention failed: {exc}"}
            if i == 0:
                record["intervention"] = it
            if view.target in entries:
                entries[view.target]["intervention"] = it
    if not args.no_figure:
        from siam.explain.figures import plot_explanation, save_figure

        for i, view in enumerate(views):
            png = png_path if not expl.several_targets else _figure_path(png_path, view.target)
            save_figure(plot_explanation(view, image, baseline=base), png)
            if i == 0:
                record["figure"] = str(png.resolve())
            if view.target in entries:
                entries[view.target]["figure"] = str(png.resolve())
    return record
