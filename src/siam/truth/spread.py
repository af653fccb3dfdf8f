"""Where does template_r's spread over seeds come from? g alone, refit over fixed inputs.

``python -m siam.truth.spread DIR`` takes a finished ``siam truth --out DIR`` run and refits g (the
son-head recipe of its budget, :func:`~siam.truth.oracle.fit_head`) over inputs that do not change
with the seed: the true masks of the training images (``--inputs oracle``, the oracle-f fit; from
``DIR/oracle_inputs.npz``) or one seed's frozen son-head f maps (``--inputs f0``, ``f1``, ...). The
seed of each refit then changes only g's data order and flips, so the spread of ``template_r`` over
``--seeds`` refits is g's alone, for each recipe variant (``--variant NAME:key=value,...`` over
:class:`~siam.truth.oracle.HeadRecipe` fields; ``base`` is the budget's recipe). Prints one line per
(inputs, variant) with template_r mean, sd (ddof 1), per seed and per attribute, and writes
``DIR/spread.json``. Each refit is a plain loop over tensors: seconds on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from siam.errors import ConfigError
from siam.truth.oracle import HeadRecipe, fit_head, head_recovery

__all__ = ["parse_variant", "refit_spread", "main"]


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"name:epochs=18,template_smoothness=3"`` -> ``("name", {"epochs": 18, ...})``; keys are
    :class:`HeadRecipe` fields, values parsed as YAML (``"base"``: no change)."""
    from siam.training.config import parse_override

    name, _, rest = text.partition(":")
    fields = {f.name for f in dataclasses.fields(HeadRecipe)}
    kw: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, _ = item.partition("=")
        if not eq or key.strip() not in fields:
            raise ConfigError(f"--variant {text!r}: {item!r} is not KEY=VALUE with KEY one of {sorted(fields)}")
        kw.update(parse_override(item))  # the value parsed as YAML, as siam train --set does
    if not name:
        raise ConfigError(f"--variant {text!r}: give it a name, e.g. 'head18:epochs=18'")
    return name, kw


def refit_spread(x_train: Any, y_train: Any, x_test: Any, pooled_test: Any, truth: Any, names: Sequence[str], *,
                 recipe: HeadRecipe, seeds: Sequence[int], border: int = 0, observed_share: float) -> dict[str, Any]:
    """g refit with ``recipe`` once per seed over the same inputs; template_r, contribution_r and sign
    agreement per seed with their mean and sd (ddof 1), and template_r per attribute per seed."""
    rows = []
    for s in seeds:
        head = fit_head(x_train, y_train, recipe=recipe, seed=int(s))
        rows.append(head_recovery(head, x_test, pooled_test, truth, names, border=border, observed_share=observed_share))
    out: dict[str, Any] = {"seeds": [int(s) for s in seeds]}
    for key in ("template_r", "contribution_r", "template_sign_agreement"):
        vals = [r[key] for r in rows]
        arr = np.array([np.nan if v is None else v for v in vals], dtype=float)
        out[key] = {"values": vals, "mean": float(np.nanmean(arr)),
                    "sd": float(np.nanstd(arr, ddof=1)) if len(arr) > 1 else None}
    attrs = sorted({a for r in rows for a in r["per_attribute"]["template_r"]})
    out["template_r_per_attribute"] = {a: [r["per_attribute"]["template_r"].get(a) for r in rows] for a in attrs}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m siam.truth.spread", description=__doc__.splitlines()[0])
    p.add_argument("run", metavar="DIR", help="a finished 'siam truth --out DIR' run")
    p.add_argument("--budget", default="quick", help="the run's budget (quick|full|tiny|YAML; default quick)")
    p.add_argument("--inputs", action="append", default=None, metavar="oracle|fN",
                   help="oracle (true masks, default) or fN (seed N's frozen son-head f); repeatable")
    p.add_argument("--variant", action="append", default=None, metavar="NAME:KEY=V,...",
                   help="a recipe variant (HeadRecipe fields); repeatable; default: base only")
    p.add_argument("--seeds", type=int, default=5, help="refits per (inputs, variant) (default 5)")
    args = p.parse_args(argv)
    import torch

    threads = torch.get_num_threads()  # _run uses one; a caller (a test, a notebook) keeps its own
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    import torch

    from siam.checkpoint import load_checkpoint
    from siam.evaluation.cli import load_eval_data
    from siam.evaluation.planted import load_truth
    from siam.evaluation.runner import OBSERVED_CELL_SHARE
    from siam.quickstart import RECIPE, stage_configs
    from siam.truth.config import read_budget
    from siam.truth.run import f_inputs, son_images
    from siam.truth.worlds import attribute_names, son_set, world_truth

    torch.set_num_threads(1)
    run = Path(args.run)
    cache = run / "oracle_inputs.npz"
    if not cache.is_file() or not (run / "data").is_dir() or not (run / "test_world").is_dir():
        raise ConfigError(f"{str(run)!r} is not a finished 'siam truth --out DIR' run of a generated world "
                          "(needs oracle_inputs.npz, data/ and test_world/)")
    if args.seeds < 2:
        raise ConfigError(f"--seeds must be >= 2 to give a spread, got {args.seeds}")
    variants = dict(parse_variant(v) for v in (args.variant or ["base"]))
    _, b = read_budget(args.budget)
    raw, overrides = b.recipe(RECIPE)
    cfg = stage_configs(run / "seed_0", run / "data", raw, [*overrides, "trainer.seed=0"])["son_head"]
    world, test_root = run / "data", run / "test_world"
    truth_train, truth_test = world_truth(world), load_truth(test_root / "truth")
    names = [a for a in attribute_names(world, cfg.attributes) if a in truth_train.attributes]
    z = np.load(cache)
    y = son_set(world, "train", seed=cfg.data.split_seed).scores.numpy()
    base = HeadRecipe.from_config(cfg)
    sources: dict[str, tuple[Any, Any]] = {}
    images: tuple[Any, Any] | None = None  # (train, test) SoN images, decoded once for every fN
    for name in args.inputs or ["oracle"]:
        if name == "oracle":
            sources[name] = (z["x_train"], z["x_test"])
            continue
        ckpt = run / f"seed_{name[1:]}" / "son_head" / "model.safetensors"
        if not name.startswith("f") or not name[1:].isdigit() or not ckpt.is_file():
            raise ConfigError(f"--inputs {name!r}: expected 'oracle' or fN with {str(ckpt)!r} present")
        if images is None:
            pre = cfg.preprocessing.build()
            d = load_eval_data(preprocessing=pre, data=test_root, split="all", split_seed=cfg.data.split_seed)
            images = son_images(world, d["son"], pre, split_seed=cfg.data.split_seed)
        sources[name] = f_inputs(load_checkpoint(ckpt), names, images)
    result: dict[str, Any] = {"run": str(run), "recipe": dataclasses.asdict(base), "results": {}}
    for src, (x_tr, x_te) in sources.items():
        for vname, kw in variants.items():
            try:
                recipe = dataclasses.replace(base, **kw)
            except TypeError as exc:
                raise ConfigError(f"--variant {vname}: {exc}") from exc
            r = refit_spread(x_tr, y, x_te, z["pooled_test"], truth_test, names, recipe=recipe,
                             seeds=range(args.seeds), border=cfg.model.border, observed_share=OBSERVED_CELL_SHARE)
            result["results"][f"{src}/{vname}"] = {"variant": kw, **r}
            t = r["template_r"]
            per = {a: [None if v is None else round(v, 3) for v in vs] for a, vs in r["template_r_per_attribute"].items()}
            print(f"{src} {vname}: template_r {t['mean']:.3f} sd {t['sd']:.3f} "
                  f"{[None if v is None else round(v, 3) for v in t['values']]}; contribution_r "
                  f"{r['contribution_r']['mean']:.3f}; per attribute {per}", flush=True)
    (run / "spread.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {run / 'spread.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
