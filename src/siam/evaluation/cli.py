"""``siam evaluate``: RMSE, Kendall's tau, attribute AP and planted-truth recovery, side by side.

Examples::

    siam evaluate --data runs/q/data --model baseline=runs/q/baseline/model.safetensors \\
        --model siam_no_finetune=runs/q/son_head/model.safetensors \\
        --model siam_joint=runs/q/joint/model.safetensors --out runs/q/eval
    siam evaluate --sun data/sun_attributes --son data/scenic_or_not --model m.safetensors

``--data DIR`` is a folder in the ``siam synth`` layout (``sun/``, ``son/``, optional
``son_attributes.csv`` and ``truth/``) or in the CSV format (``attributes.csv`` rows are scored for
attribute AP, ``targets.csv`` rows for RMSE and tau of each target, paired with the model's targets
by name (by position when no name is shared); :mod:`siam.data.csv_folder`), told apart by
its contents; ``--sun`` / ``--son`` / ``--son-attributes`` point at the parts separately (e.g. the
real datasets). For CSV rows without a ``split`` column the split is read from ``--splits`` (e.g.
the training run's ``OUT/splits.csv``), else drawn from ``--split-seed`` (default: the first
model's ``data.split_seed``, as ``siam train`` drew it) and written to ``OUT/splits.csv`` with
``--out``. Writes ``report.json`` and
``report.md`` with ``--out``. A CSV folder written by ``siam data to-csv`` from a planted world
carries its truth (``DIR/truth`` with ``csv_ids.csv``): the planted-truth metrics are then
reported as on the original folder; without it, RMSE, tau and AP only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from siam.data.csv_folder import data_layout
from siam.errors import CheckpointError, ConfigError, DatasetError

__all__ = ["add_arguments", "run", "evaluate_models", "load_eval_data"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                        help="a model file (.safetensors or .ckpt) or a 'siam train --out' folder; repeat for a side-by-side table. "
                        "Names baseline, siam_no_finetune, siam_joint give the paper's table order")
    parser.add_argument("--data", metavar="DIR", help="folder in the 'siam synth' layout or the CSV format "
                        "(attributes.csv / targets.csv), detected from its contents")
    parser.add_argument("--splits", metavar="CSV", help="CSV folder: the split of rows without a 'split' column "
                        "(path,split; e.g. the training run's OUT/splits.csv)")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="CSV folder without --splits: seed of the drawn split (default: the first "
                        "model's data.split_seed, as it was trained; 0 when not recorded)")
    parser.add_argument("--sun", metavar="DIR", help="SUN Attributes folder (default DATA/sun)")
    parser.add_argument("--son", metavar="DIR", help="ScenicOrNot folder (default DATA/son)")
    parser.add_argument("--son-attributes", metavar="CSV", help="SoN attribute CSV (default DATA/son_attributes.csv)")
    parser.add_argument("--truth", metavar="DIR", help="planted truth (default DATA/truth when present)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="held-out split (default test)")
    parser.add_argument("--out", metavar="DIR", help="write report.json and report.md here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--faithfulness", nargs="?", type=int, const=16, default=None, metavar="N",
        help="also run the deletion/insertion faithfulness benchmark on N held-out ScenicOrNot "
        "images (default 16): SIAM's |total contribution| ranking vs a random ranking vs the "
        "baseline's Grad-CAM (needs a model named 'baseline' for the latter)",
    )


def _parse_models(items: Sequence[str]) -> dict[str, Path]:
    from siam.checkpoint import checkpoint_file

    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        if (sep and not name) or not path:
            raise ConfigError(f"--model {item!r}: expected PATH or NAME=PATH")
        try:
            p = checkpoint_file(path)  # a 'siam train --out' folder -> its model.safetensors
        except CheckpointError as exc:
            raise ConfigError(f"--model {item!r}: {exc}") from exc
        if not sep:
            name = p.parent.name or p.stem
        if name in out:
            raise ConfigError(f"--model: the name {name!r} is used twice; give each model its own NAME=")
        if not p.is_file():
            raise ConfigError(f"--model {item!r}: file {str(p)!r} not found")
        out[name] = p
    return out


def load_eval_data(
    *,
    preprocessing: Any,
    data: str | Path | None = None,
    sun: str | Path | None = None,
    son: str | Path | None = None,
    son_attributes: str | Path | None = None,
    truth: str | Path | None = None,
    split: str = "test",
    splits: str | Path | None = None,
    split_seed: int = 0,
) -> dict[str, Any]:
    """The held-out datasets (eval transform of ``preprocessing``) and the truth, if any.

    ``data`` may be a CSV folder (``splits`` / ``split_seed``: see the module docstring). Returns
    ``{"son", "son_targets", "sun", "sun_attributes", "son_attr", "son_attr_names", "truth"}``
    (``son_targets``: the CSV target names; None for the one unnamed ScenicOrNot target); absent
    parts are None.
    """
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.son_attributes import SonAttributeSet
    from siam.data.sun_attributes import SunAttributes
    from siam.data.transforms import eval_transform
    from siam.evaluation.planted import load_truth

    root = Path(data) if data is not None else None
    if root is not None and not root.is_dir():
        raise DatasetError(f"--data {str(root)!r} is not a directory")
    if root is not None and not (sun and son) and data_layout(root) == "csv":
        out = _load_csv_data(root, preprocessing=preprocessing, split=split, splits=splits, split_seed=split_seed,
                             given={"--sun": sun, "--son": son, "--son-attributes": son_attributes})
        return _with_csv_truth(out, root, truth)
    sun_p = Path(sun) if sun else (root / "sun" if root else None)
    son_p = Path(son) if son else (root / "son" if root else None)
    attr_p = Path(son_attributes) if son_attributes else (root / "son_attributes.csv" if root else None)
    truth_p = Path(truth) if truth else (root / "truth" if root else None)
    if sun_p is None and son_p is None:
        raise ConfigError("nothing to evaluate on: give --data DIR, or --sun and/or --son")
    tf = eval_transform(preprocessing)
    out: dict[str, Any] = {"son": None, "son_targets": None, "sun": None, "sun_attributes": (), "son_attr": None,
                           "son_attr_names": (), "truth": None}
    if son_p is not None and son_p.exists():
        out["son"] = ScenicOrNot(son_p, split, transform=tf)
    if sun_p is not None and sun_p.exists():
        ds = SunAttributes(sun_p, split, transform=tf)
        out["sun"], out["sun_attributes"] = ds, ds.attributes
    if attr_p is not None and attr_p.is_file() and son_p is not None:
        ds = SonAttributeSet(attr_p, son_p / "images", transform=tf)
        out["son_attr"], out["son_attr_names"] = ds, ds.attributes
    if truth_p is not None and (truth_p / "meta.json").is_file():
        out["truth"] = load_truth(truth_p)
    elif truth:
        raise DatasetError(f"--truth {str(truth_p)!r} has no meta.json")
    return out


def _load_csv_data(
    root: Path, *, preprocessing: Any, split: str, splits: str | Path | None, split_seed: int,
    given: Mapping[str, Any],
) -> dict[str, Any]:
    """:func:`load_eval_data` for a CSV folder: targets.csv rows as "son", attributes.csv rows as "sun"."""
    from siam.data.csv_folder import ATTRIBUTES_FILE, TARGETS_FILE, CsvDataset
    from siam.data.transforms import eval_transform

    extra = [k for k, v in given.items() if v]
    if extra:
        raise ConfigError(f"--data {str(root)!r} is a CSV folder; {', '.join(extra)} apply to the 'siam synth' "
                          "layout only (the SoN attribute set is not part of the CSV format; its planted truth, "
                          "if any, is DIR/truth)")
    tf = eval_transform(preprocessing)
    kw: dict[str, Any] = {"transform": tf, "seed": split_seed, "splits_file": splits}
    out: dict[str, Any] = {"son": None, "son_targets": None, "sun": None, "sun_attributes": (), "son_attr": None,
                           "son_attr_names": (), "truth": None}
    if (root / TARGETS_FILE).is_file():
        out["son"] = CsvDataset(root, split, rows="targets", **kw)
        out["son_targets"] = out["son"].target_names
    if (root / ATTRIBUTES_FILE).is_file():
        ds = CsvDataset(root, split, rows="attributes", **kw)
        out["sun"], out["sun_attributes"] = ds, ds.attributes
    return out


def _with_csv_truth(out: dict[str, Any], root: Path, truth: str | Path | None) -> dict[str, Any]:
    """Add the planted truth a CSV folder carries (``--truth`` or ``root/truth`` with its
    ``csv_ids.csv``, as ``siam data to-csv`` writes it), every held-out image checked to have masks."""
    from siam.evaluation.planted import load_csv_truth

    t = load_csv_truth(root, truth)
    if t is not None:
        for role, source in (("son", "son"), ("sun", "sun")):
            if out[role] is not None:
                t.check_ids(source, out[role].ids)
    out["truth"] = t
    return out


def evaluate_models(
    paths: Mapping[str, str | Path],
    *,
    split: str = "test",
    batch_size: int = 64,
    num_workers: int = 0,
    **data: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Load each model and evaluate it on the held-out data (shared between models with the same
    preprocessing). Returns (``{name: metrics}`` with ``checkpoint`` set to the file, data-level
    extras: the noise floor and the SoN attribute set's annotator agreement)."""
    from siam.checkpoint import load_checkpoint
    from siam.evaluation.metrics import annotator_agreement
    from siam.evaluation.runner import EvalData, evaluate_model, sun_map_ceiling
    from siam.models.siam import SIAM

    cache: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        model = load_checkpoint(path)
        key = json.dumps(model.preprocessing.to_dict(), sort_keys=True)
        if key not in cache:
            cache[key] = load_eval_data(preprocessing=model.preprocessing, split=split, **data)
        d = cache[key]
        ev = EvalData(son=d["son"], sun=d["sun"], sun_attributes=d["sun_attributes"], truth=d["truth"], split=split,
                      targets=d["son_targets"])
        res = evaluate_model(model, ev, batch_size=batch_size, num_workers=num_workers)
        if isinstance(model, SIAM) and d["son_attr"] is not None:
            sa = EvalData(son=None, sun=d["son_attr"], sun_attributes=d["son_attr_names"])
            r2 = evaluate_model(model, sa, batch_size=batch_size, num_workers=num_workers)
            res["son_attributes_map"] = r2["sun_map"]
            res["son_attributes_ap"] = r2.get("sun_ap")
        res["checkpoint"] = str(path)
        results[name] = res
    extra: dict[str, Any] = {}
    d = next(iter(cache.values()), None)
    if d is not None and d["truth"] is not None:
        extra["noise_floor_rmse"] = d["truth"].noise_floor_rmse.get(split)
        if d["sun"] is not None:
            extra["sun_map_ceiling"] = sun_map_ceiling(d["truth"], d["sun"], d["sun_attributes"])
    if d is not None and d["son_attr"] is not None:
        extra["son_attributes_agreement"] = annotator_agreement(d["son_attr"].labels.numpy(), d["son_attr_names"])
    return results, extra


def run(args: argparse.Namespace) -> int:
    from siam.evaluation.report import build_report, render_markdown, write_report

    start = time.perf_counter()
    paths = _parse_models(args.model)
    splits = _splits_file(args)
    seed = args.split_seed if args.split_seed is not None else _trained_split_seed(next(iter(paths.values())))
    results, extra = evaluate_models(
        paths, split=args.split, batch_size=args.batch_size, num_workers=args.num_workers,
        data=args.data, sun=args.sun, son=args.son, son_attributes=args.son_attributes, truth=args.truth,
        splits=splits, split_seed=seed,
    )
    if args.faithfulness is not None:
        extra["faithfulness"] = _faithfulness(paths, n=args.faithfulness, split=args.split,
                                              data=args.data, son=args.son, splits=splits, split_seed=seed)
    floor = extra.pop("noise_floor_rmse", None)
    report = build_report(results, noise_floor_rmse=floor, wall_time_s=time.perf_counter() - start,
                          split=args.split, extra=extra)
    if args.out:
        j, m = write_report(report, args.out)
        print(f"siam evaluate: wrote {j} and {m}")
    print(render_markdown(report))
    return 0


def _trained_split_seed(path: Path) -> int:
    """``data.split_seed`` recorded in a checkpoint's training config; 0 when absent."""
    from siam.checkpoint import read_meta

    data = ((read_meta(path) or {}).get("train_config") or {}).get("data") or {}
    seed = data.get("split_seed", 0)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _splits_file(args: argparse.Namespace) -> Path | None:
    """``--splits`` (must exist), else ``OUT/splits.csv`` with ``--out`` (written when drawn), else None."""
    from siam.data.csv_folder import SPLITS_FILE

    if args.splits:
        p = Path(args.splits)
        if not p.is_file():
            raise ConfigError(f"--splits {args.splits!r}: file not found (a training run writes OUT/{SPLITS_FILE})")
        return p
    return Path(args.out) / SPLITS_FILE if args.out else None


def _faithfulness(
    paths: Mapping[str, Path], *, n: int, split: str, data: str | None, son: str | None,
    splits: Path | None = None, split_seed: int = 0,
) -> dict[str, Any]:
    """Deletion/insertion benchmark (``siam.explain.faithfulness``) for the first SIAM model,
    against the model named ``baseline`` when given, on the first ``n`` held-out SoN images."""
    import torch

    from siam.checkpoint import load_checkpoint
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.transforms import eval_transform
    from siam.explain.faithfulness import faithfulness
    from siam.models.siam import SIAM

    if n < 1:
        raise ConfigError(f"--faithfulness N must be >= 1, got {n}")
    models = {name: load_checkpoint(p) for name, p in paths.items()}
    siam_name = next((k for k, m in models.items() if isinstance(m, SIAM)), None)
    if siam_name is None:
        raise ConfigError("--faithfulness needs at least one SIAM model among --model")
    model = models[siam_name]
    son_p = Path(son) if son else (Path(data) / "son" if data else None)
    if data and not son and data_layout(data) == "csv":
        from siam.data.readers import son_reader

        ds: Any = son_reader(data, split, transform=eval_transform(model.preprocessing), seed=split_seed,
                             splits_file=splits)
    elif son_p is None or not son_p.exists():
        raise ConfigError("--faithfulness needs ScenicOrNot images: give --data DIR or --son DIR")
    else:
        ds = ScenicOrNot(son_p, split, transform=eval_transform(model.preprocessing))
    images = torch.stack([ds[i].image for i in range(min(n, len(ds)))])  # (N, 3, H, W)
    result = faithfulness(model, images, baseline=models.get("baseline"), seed=0)
    result["model"] = siam_name
    return result
