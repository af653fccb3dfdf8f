"""``siam truth --out DIR [--data DIR] [--seeds N] [--budget quick|full]``: prove the explanations
right, with ceilings, controls and seeds.

What it does (details and keys in the README, section "siam truth"):

1. Worlds: the training world (``--data``, in the ``siam synth`` layout or its CSV copy with the
   truth ``siam data to-csv`` carries, :mod:`siam.truth.worlds`; or generated into ``DIR/data``), a separate large test
   world with the same generator settings and another seed (``DIR/test_world``, evaluated on all
   its images; grown until every attribute has enough positives) and a decorrelated one
   (``DIR/decorrelated_world``, ``siam synth --decorrelate``). With ``--data`` the folder's own test
   split is the test set, and what needs the generator (re-rendering, the decorrelated world) runs
   only when the folder records its ``siam synth`` settings.
2. Training, per seed (``DIR/seed_<s>/``): the quickstart's stages (``sun -> son-head -> joint`` and
   the baseline) as child processes, as many at once as there are cores; finished runs are kept on a
   re-run (same recipe) and interrupted ones resume.
3. Measurement per seed: every planted-truth metric of ``siam_joint``, ``siam_no_finetune`` and the
   baseline, with bootstrap confidence intervals over the test images; the oracle-f ceiling and the
   shuffled-scores control (:mod:`siam.truth.oracle`, :mod:`siam.truth.controls`); the cascading
   randomisation; the decorrelated world; FunnyBirds correctness (:mod:`siam.truth.correctness`).
4. ``DIR/truth.json`` and ``DIR/truth.md`` (:mod:`siam.truth.report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siam.errors import ConfigError, DatasetError

__all__ = ["add_arguments", "run", "truth", "MODELS", "TEST_WORLD_SEED", "DECORRELATED_SEED"]

TAG = "siam truth"
#: Report name -> stage run folder (as the quickstart).
MODELS: dict[str, str] = {"siam_joint": "joint", "siam_no_finetune": "son_head", "baseline": "baseline"}
#: Generator seeds of the test worlds (the training world uses seed 0).
TEST_WORLD_SEED = 1
DECORRELATED_SEED = 2
#: Seconds between progress lines while child processes train.
HEARTBEAT_S = 60.0
#: Seed of the choice of scenes (correctness) and of the bootstrap.
_PICK_SEED = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (truth.json, truth.md, runs, worlds)")
    parser.add_argument("--data", metavar="DIR",
                        help="a planted world (with truth/) in the 'siam synth' layout or its CSV copy ('siam data "
                        "to-csv' carries truth/) instead of generating one; its own test split is then the test set")
    parser.add_argument("--seeds", type=int, metavar="N", help="training seeds (default: the budget's; quick: 3)")
    parser.add_argument("--budget", default="quick", metavar="quick|full|tiny|YAML",
                        help="quick (default: ~30 min on 2 CPU cores), full (a GPU), tiny (smoke tests), "
                        "or a YAML file of budget keys (configs/truth_quick.yaml shows them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a training-recipe key for every stage, after the budget's overrides (repeatable; "
                        "'stages.<stage>.KEY=VALUE' reaches one stage), e.g. --set optim.mask_weight=0.03; "
                        "recorded in truth.json (budget_config.overrides) and in the budget's name")


class _Progress:
    """Plain progress lines with the elapsed time (the terminal or a log file alike)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"{TAG} [{time.perf_counter() - self.start:6.0f} s] {message}", flush=True)


# --- worlds ---------------------------------------------------------------------------------------


def _synth_config(root: Path) -> Any | None:
    """The SynthConfig that wrote ``root`` (from truth/meta.json), or None if not written by siam synth."""
    from siam.synth import SynthConfig

    try:
        meta = json.loads((root / "truth" / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != "siam synth" or not isinstance(meta.get("settings"), dict):
        return None
    try:
        return SynthConfig.from_dict(meta["settings"])
    except (ConfigError, TypeError, ValueError):
        return None


def _generate(root: Path, config: Any, seed: int, workers: int, say: Callable[[str], None], what: str) -> None:
    """Generate ``root`` unless it already holds exactly this world (kept on a re-run)."""
    from siam.synth import generate

    meta = root / "truth" / "meta.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        if old.get("seed") == seed and old.get("settings") == json.loads(json.dumps(config.to_dict())):
            say(f"{what}: kept {root}")
            return
    say(f"{what}: generating {config.n_sun} SUN + {config.n_son} ScenicOrNot images into {root}")
    generate(root, seed=seed, config=config, workers=workers, overwrite=True)


def positive_counts(root: Path, split: str, attributes: Sequence[str], *, seed: int = 0) -> dict[str, dict[str, int]]:
    """Per attribute: positive SUN images (label >= 0.5) and SoN images showing it (true mask not
    empty) in ``split`` of the world ``root`` (either layout, :mod:`siam.truth.worlds`; ``seed``: a
    CSV folder's drawn split): ``{name: {"sun": n, "son": n}}``."""
    from siam.truth.worlds import require_truth, son_set, sun_set

    truth = require_truth(root, what=TAG)
    sun = sun_set(root, split, attributes=tuple(attributes), seed=seed)
    son = son_set(root, split, seed=seed)
    pos = (sun.labels.numpy() >= 0.5).sum(0)
    ti = [truth.attributes.index(a) for a in attributes]
    shown = np.zeros(len(attributes), dtype=np.int64)
    for ident in son.ids:
        shown += truth.masks("son", ident)[ti].reshape(len(ti), -1).any(1)
    return {a: {"sun": int(pos[k]), "son": int(shown[k])} for k, a in enumerate(attributes)}


def _short(counts: dict[str, dict[str, int]], need: int) -> dict[str, list[str]]:
    return {src: [a for a, c in counts.items() if c[src] < need] for src in ("sun", "son")}


def _test_world(out: Path, config: Any, budget: Any, attributes: Sequence[str], say: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Generate (and grow) the test world until every attribute has ``min_positives`` of each."""
    n_sun, n_son = budget.test_n_sun, budget.test_n_son
    root = out / "test_world"
    try:  # a re-run starts from the size an earlier run grew this world to
        old = json.loads((root / "truth" / "meta.json").read_text())
        base = {**config.to_dict(), "n_sun": old["settings"]["n_sun"], "n_son": old["settings"]["n_son"]}
        if old.get("seed") == TEST_WORLD_SEED and old["settings"] == json.loads(json.dumps(base)):
            n_sun = min(budget.test_max_n, max(n_sun, int(base["n_sun"])))
            n_son = min(budget.test_max_n, max(n_son, int(base["n_son"])))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    while True:
        cfg = dataclasses.replace(config, n_sun=n_sun, n_son=n_son)
        _generate(root, cfg, TEST_WORLD_SEED, budget.synth_workers, say, "test world")
        counts = positive_counts(root, "all", attributes)
        short = _short(counts, budget.min_positives)
        grow_sun = bool(short["sun"]) and n_sun < budget.test_max_n
        grow_son = bool(short["son"]) and n_son < budget.test_max_n
        if not (grow_sun or grow_son):
            break
        say(f"test world: too few positives (SUN {short['sun']}, SoN {short['son']}); growing it")
        n_sun = min(budget.test_max_n, math.ceil(n_sun * budget.test_growth)) if grow_sun else n_sun
        n_son = min(budget.test_max_n, math.ceil(n_son * budget.test_growth)) if grow_son else n_son
    return root, {"n_sun": n_sun, "n_son": n_son, "split": "all", "min_positives": budget.min_positives,
                  "per_attribute": counts, "short": short}


# --- training -------------------------------------------------------------------------------------


def _train_all(configs: dict[int, dict[str, Any]], out: Path, say: Callable[[str], None], *,
               child_processes: bool = True) -> dict[int, dict[str, Path]]:
    """Train every seed's four stages as child processes, ``cores`` at a time (each chain's stages
    in order, longest jobs first), or one after the other in this process; reuse finished ones
    (same recipe), resume interrupted ones; raise on the first failure."""
    from siam.quickstart import _train_stage, start_stage_process, trained_model
    from siam.resources import usable_cores

    if not child_processes:
        return {s: {name: _train_stage(f"seed {s} {name}", cfg, tag=TAG) for name, cfg in stages.items()}
                for s, stages in configs.items()}

    jobs: list[tuple[int, list[str]]] = []
    for s in configs:
        jobs.append((s, ["sun", "son_head", "joint"]))
    for s in configs:
        jobs.append((s, ["baseline"]))
    paths: dict[int, dict[str, Path]] = {s: {} for s in configs}
    running: list[tuple[int, list[str], str, Any, float]] = []
    slots = usable_cores()
    beat = time.perf_counter()
    try:
        while jobs or running:
            if running and time.perf_counter() - beat >= HEARTBEAT_S:
                beat = time.perf_counter()
                say("training: " + ", ".join(f"seed {s} {n} ({beat - t0:.0f} s)" for s, _, n, _, t0 in running)
                    + f"; {sum(len(st) for _, st in jobs)} stage(s) waiting")
            while jobs and len(running) < slots:
                s, stages = jobs.pop(0)
                name = stages[0]
                cfg = configs[s][name]
                done = trained_model(f"seed {s} {name}", cfg, tag=TAG)
                if done is not None:
                    paths[s][name] = done
                    if stages[1:]:
                        jobs.insert(0, (s, stages[1:]))
                    continue
                child = start_stage_process(f"{name}", cfg, out / f"seed_{s}", tag=f"{TAG}: seed {s}")
                running.append((s, stages, name, child, time.perf_counter()))
            time.sleep(0.5)
            for item in list(running):
                s, stages, name, child, t0 = item
                if child.proc.poll() is None:
                    continue
                running.remove(item)
                child.wait()  # raises with the log's tail if it failed
                model = Path(configs[s][name].out) / "model.safetensors"
                if not model.is_file():
                    raise DatasetError(f"training seed {s} {name} exited without writing {model}; see {child.log_path}")
                paths[s][name] = model
                say(f"seed {s}: {name} trained in {time.perf_counter() - t0:.0f} s")
                if stages[1:]:
                    jobs.insert(0, (s, stages[1:]))
    except BaseException:
        for _, _, _, child, _ in running:
            child.stop()
        raise
    return paths


# --- evaluation helpers ---------------------------------------------------------------------------


def son_images(world: Path, test_son: Any, pre: Any, *, split_seed: int) -> tuple[Any, Any]:
    """The SoN training images of ``world`` (eval transform of ``pre``) and those of the test set
    ``test_son``, each decoded once: (N, 3, H, W) tensors, in the datasets' order."""
    from siam.data.transforms import eval_transform
    from siam.truth.worlds import son_set

    return _images(son_set(world, "train", transform=eval_transform(pre), seed=split_seed)), _images(test_son)


def f_inputs(f_model: Any, names: Sequence[str], images: tuple[Any, Any], *, batch_size: int = 64) -> tuple[Any, Any]:
    """g's inputs over a frozen f: its attribute maps of the (train, test) images (:func:`son_images`),
    each (N, K, m, m) with the attributes in ``names`` order. The shuffled-scores control and
    ``python -m siam.truth.spread --inputs fN`` both refit g on these."""
    from siam.truth import controls as C

    mi = [f_model.attributes.index(a) for a in names]
    return tuple(C.attribute_maps(f_model, x, batch_size=batch_size)[:, mi] for x in images)  # type: ignore[return-value]


def _images(ds: Any, limit: int | None = None) -> Any:
    import torch

    n = len(ds) if limit is None else min(limit, len(ds))
    return torch.stack([ds[i].image for i in range(n)]) if n else torch.zeros(0)


def _bootstrap(arrays: dict[str, Any], metric: str, *, floor: float | None, names: Sequence[str], n_boot: int) -> list[float] | None:
    """95 % percentile-bootstrap interval of ``metric`` over the test images (None: not per image)."""
    from siam.evaluation import planted as P

    a = arrays
    if metric == "rmse_over_noise_floor" and floor:
        vals: tuple[Any, ...] = (np.asarray(a["son_pred"], float), np.asarray(a["son_target"], float))
        stat: Callable[..., float] = lambda p, t: float(np.sqrt(np.mean((p - t) ** 2)) / floor)  # noqa: E731
    elif metric == "sun_map" and a.get("sun_presence") is not None and len(a["sun_presence"]):
        vals, stat = (np.asarray(a["sun_presence"], float), np.asarray(a["sun_labels"]) >= 0.5), _mean_ap
    elif metric in ("contribution_r", "template_sign_agreement") and a.get("contributions") is not None:
        fn = P.contribution_r if metric == "contribution_r" else P.effect_sign_agreement
        vals = (np.asarray(a["contributions"]), np.asarray(a["planted_contributions"]), np.asarray(a["present"]))
        stat = lambda c, p, pr: float(fn(c, p, pr, list(a["attributes"])).value)  # noqa: E731
    elif metric == "mass_in_mask" and a.get("mass_pairs") is not None and len(a["mass_pairs"]):
        vals, stat = (np.asarray(a["mass_pairs"], float),), lambda m: float(np.mean(m))  # noqa: E731
    elif metric == "total_map_r" and a.get("total_map_r") is not None and len(a["total_map_r"]):
        vals, stat = (np.asarray(a["total_map_r"], float),), lambda r: float(np.nanmean(r))  # noqa: E731
    elif metric == "correctness" and a.get("correctness") is not None:
        vals, stat = (np.asarray(a["correctness"], float),), lambda r: float(np.nanmean(r))  # noqa: E731
    else:
        return None
    lo, hi = P.bootstrap_ci(vals if len(vals) > 1 else vals[0], stat=stat, n_boot=n_boot, seed=_PICK_SEED)
    return None if not (np.isfinite(lo) and np.isfinite(hi)) else [float(lo), float(hi)]


def _mean_ap(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mean over attributes with a positive of the average precision (N, K) -> float: the sum, over
    the positives in descending score order, of the precision at each, over the positives (ties
    broken by order, unlike sklearn's thresholds; used only inside the bootstrap, where sklearn's
    per-call cost times the resamples would dominate the run)."""
    order = np.argsort(-scores, axis=0, kind="stable")
    y = np.take_along_axis(positive, order, axis=0).astype(np.float64)  # (N, K)
    hits = np.cumsum(y, axis=0)
    precision = hits / np.arange(1, len(y) + 1)[:, None]
    n_pos = y.sum(0)
    ok = n_pos > 0
    return float(((precision * y).sum(0)[ok] / n_pos[ok]).mean()) if ok.any() else math.nan


def _finite_mean(x: Any) -> float | None:
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _fmt(v: Any) -> str:
    """A number with 3 decimals, or n/a."""
    x = _num(v)
    return "n/a" if x is None else f"{x:.3f}"


def _num(v: Any) -> float | None:
    return None if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else float(v)


# --- the run --------------------------------------------------------------------------------------


def truth(
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    seeds: int | None = None,
    budget: str = "quick",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run everything; returns the truth report (also written to ``out/truth.{json,md}``).

    ``overrides``: ``KEY=VALUE`` recipe keys for every stage, applied after the budget's own (``siam
    truth --set``); checked against the training config before any world is generated."""
    from siam.checkpoint import load_checkpoint
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.synth import SynthConfig
    from siam.truth.worlds import attribute_names, require_truth, son_set
    from siam.evaluation.cli import load_eval_data
    from siam.evaluation.planted import load_truth
    from siam.evaluation.runner import OBSERVED_CELL_SHARE, EvalData, evaluate_model, sun_map_ceiling
    from siam.quickstart import RECIPE, _check_layout, stage_configs
    from siam.truth import controls as C
    from siam.truth import correctness as K
    from siam.truth.config import read_budget
    from siam.truth.oracle import HeadRecipe, fit_head, head_recovery, head_rmse, true_inputs
    from siam.truth.report import assemble, write_truth

    start = time.perf_counter()
    say = _Progress()
    budget_name, b = read_budget(budget)
    if overrides:
        b, budget_name = _with_overrides(b, budget_name, overrides)
    n_seeds = b.seeds if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ConfigError(f"--seeds must be an integer >= 1, got {seeds!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    timings: dict[str, float] = {}

    # 1. worlds
    t = time.perf_counter()
    if data is None:
        world = out / "data"
        train_cfg = SynthConfig(n_sun=b.train_n_sun, n_son=b.train_n_son)
    else:
        world = Path(data)
        if not world.is_dir():
            raise DatasetError(f"--data {str(world)!r} is not a directory")
        _check_layout(world)  # either layout; its truth is required just below
        train_cfg = _synth_config(world)
    raw, overrides = b.recipe(RECIPE)
    # built before the world is generated: a bad recipe key (budget or --set) fails at once
    configs = {s: stage_configs(out / f"seed_{s}", world, raw, [*overrides, f"trainer.seed={s}"]) for s in range(n_seeds)}
    if data is None:
        _generate(world, train_cfg, 0, b.synth_workers, say, "training world")
    truth_train = require_truth(world, what=TAG)
    probe = configs[0]["son_head"]
    split_seed = probe.data.split_seed  # a CSV folder's drawn split, as siam train draws it

    names = [a for a in attribute_names(world, probe.attributes) if a in truth_train.attributes]
    if data is None:
        test_root, counts = _test_world(out, train_cfg, b, names, say)
        split = "all"
    else:
        test_root, split = world, "test"
        counts = {"split": "test", "min_positives": b.min_positives,
                  "per_attribute": positive_counts(world, "test", names, seed=split_seed)}
        counts["short"] = _short(counts["per_attribute"], b.min_positives)
        notes.append(f"--data: the folder's own test split is the test set; attributes with fewer than "
                     f"{b.min_positives} positives there: SUN {counts['short']['sun']}, SoN {counts['short']['son']} "
                     "(their numbers are noisy).")
    decorrelated_root: Path | None = None
    if train_cfg is None:
        notes.append("--data was not written by siam synth (no generator settings in truth/meta.json): the "
                     "decorrelated world and the re-rendering for correctness need the generator and are skipped.")
    elif "decorrelate" not in {f.name for f in dataclasses.fields(SynthConfig)}:
        notes.append("this generator has no --decorrelate: the decorrelated world is skipped.")
    elif b.decorrelated_n_son > 0:
        decorrelated_root = out / "decorrelated_world"
        dcfg = dataclasses.replace(train_cfg, n_sun=10,
                                   n_son=max(10, b.decorrelated_n_son), decorrelate=True)  # type: ignore[call-arg]
        _generate(decorrelated_root, dcfg, DECORRELATED_SEED, b.synth_workers, say, "decorrelated world")
    timings["worlds"] = time.perf_counter() - t

    # 2. training
    t = time.perf_counter()
    say(f"training {n_seeds} seed(s) x 4 stages (budget {budget_name!r})")
    paths = _train_all(configs, out, say, child_processes=b.child_processes)
    timings["training"] = time.perf_counter() - t

    # 3. measurement
    t = time.perf_counter()
    truth_test = require_truth(test_root, what=TAG)
    pre = probe.preprocessing.build()
    grid, border = int(probe.model.grid or 0), probe.model.border
    d = load_eval_data(preprocessing=pre, data=test_root, split=split, split_seed=split_seed)
    ev = EvalData(son=d["son"], sun=d["sun"], sun_attributes=d["sun_attributes"], truth=truth_test, split=split)
    floor = truth_test.noise_floor_rmse.get(split)
    per_seed: dict[int, dict[str, Any]] = {}
    for s in range(n_seeds):
        per_seed[s] = {}
        for rname, stage in MODELS.items():
            say(f"seed {s}: evaluating {rname} on {len(d['son'])} SoN + {len(d['sun'])} SUN test images")
            model = load_checkpoint(paths[s][stage])
            res = evaluate_model(model, ev, batch_size=b.eval_batch_size, return_arrays=True)
            arrays = res.pop("arrays", {}) or {}
            res["ci95"] = {m: _bootstrap(arrays, m, floor=floor, names=names, n_boot=b.n_boot)
                           for m in ("rmse_over_noise_floor", "sun_map", "contribution_r", "template_sign_agreement",
                                     "mass_in_mask", "total_map_r")}
            res["_arrays"] = arrays
            per_seed[s][rname] = res
    timings["evaluate"] = time.perf_counter() - t

    # ceilings: sun_map (true areas), mass_in_mask (coverage map), oracle-f (per seed)
    t = time.perf_counter()
    ceilings: dict[str, Any] = {"sun_map": sun_map_ceiling(truth_test, d["sun"], d["sun_attributes"]) if d["sun"] is not None else None}
    joint0 = per_seed[0]["siam_joint"]
    ceilings["mass_in_mask"] = ((joint0.get("planted") or {}).get("mass_in_mask_coverage_map"))
    son_train = son_set(world, "train", seed=split_seed)
    oracle_cache = out / "oracle_inputs.npz"
    key = json.dumps([str(world.resolve()), str(test_root.resolve()), split, grid, pre.resize, pre.crop, names])
    if oracle_cache.is_file() and str(np.load(oracle_cache)["key"]) == key:
        z = np.load(oracle_cache)
        x_train, x_test, pooled_test = z["x_train"], z["x_test"], z["pooled_test"]
        say("oracle inputs: kept")
    else:
        say(f"oracle inputs: true masks of {len(son_train)} training and {len(d['son'])} test SoN images")
        x_train, _ = true_inputs(truth_train, "son", son_train.ids, grid=grid, resize=pre.resize, crop=pre.crop, attributes=names)
        x_test, pooled_test = true_inputs(truth_test, "son", d["son"].ids, grid=grid, resize=pre.resize, crop=pre.crop, attributes=names)
        np.savez_compressed(oracle_cache, key=np.array(key), x_train=x_train, x_test=x_test, pooled_test=pooled_test)
    y_train = son_train.scores.numpy()
    recipe = HeadRecipe.from_config(probe)
    y_test = d["son"].scores.numpy()
    oracle: dict[int, dict[str, Any]] = {}
    for s in range(n_seeds):
        head = fit_head(x_train, y_train, recipe=recipe, seed=s)
        oracle[s] = head_recovery(head, x_test, pooled_test, truth_test, names, border=border, observed_share=OBSERVED_CELL_SHARE)
        # the oracle run's RMSE: the best this g recipe does from perfect maps (the target compares against it)
        oracle[s]["rmse_over_noise_floor"] = head_rmse(head, x_test, y_test) / floor if floor else None
    say("oracle-f: " + ", ".join(f"seed {s} contribution_r {_fmt(o['contribution_r'])} template_r {_fmt(o['template_r'])}"
                                 for s, o in oracle.items()))
    timings["oracle"] = time.perf_counter() - t

    # controls: shuffled scores over each seed's frozen f (the son-head model), cascading randomisation
    t = time.perf_counter()
    train_images, test_images = son_images(world, d["son"], pre, split_seed=split_seed)
    shuffled: dict[int, dict[str, Any]] = {}
    randomised: dict[int, list[dict[str, Any]]] = {}
    for s in range(n_seeds):
        tr_maps, te_maps = f_inputs(load_checkpoint(paths[s]["son_head"]), names, (train_images, test_images),
                                    batch_size=b.eval_batch_size)
        shuffled[s] = C.shuffled_scores(tr_maps, y_train, te_maps, pooled_test, truth_test, names, recipe=recipe,
                                        seed=s, border=border, observed_share=OBSERVED_CELL_SHARE)
        joint = load_checkpoint(paths[s]["joint"])
        randomised[s] = C.cascading_randomisation(joint, test_images[: b.randomisation_images], seed=s)
        say(f"seed {s}: shuffled control contribution_r {_fmt(shuffled[s]['contribution_r'])}; randomisation last step "
            f"Spearman {_fmt(randomised[s][-1]['spearman'])}")
    timings["controls"] = time.perf_counter() - t

    # decorrelated world
    t = time.perf_counter()
    decorrelated: dict[int, dict[str, Any]] = {}
    if decorrelated_root is not None:
        from siam.data.transforms import eval_transform

        dec_son = ScenicOrNot(decorrelated_root / "son", "all", transform=eval_transform(pre))
        dev = EvalData(son=dec_son, sun=None, truth=load_truth(decorrelated_root / "truth"), split="all")
        for s in range(n_seeds):
            decorrelated[s] = {}
            for rname in ("siam_joint", "siam_no_finetune"):
                r = evaluate_model(load_checkpoint(paths[s][MODELS[rname]]), dev, batch_size=b.eval_batch_size)
                decorrelated[s][rname] = r.get("contribution_r")
        say("decorrelated world contribution_r: " + ", ".join(f"seed {s} joint {_fmt(v['siam_joint'])}"
                                                                for s, v in decorrelated.items()))
    timings["decorrelated"] = time.perf_counter() - t

    # correctness (re-rendered scenes)
    t = time.perf_counter()
    correct: dict[int, dict[str, Any]] = {}
    if train_cfg is not None and b.correctness_scenes > 0:
        ids = [truth_test.key("son", i) for i in d["son"].ids]  # the generator's IDs (CSV: through csv_ids.csv)
        rng = np.random.default_rng(_PICK_SEED)
        pick = sorted(rng.choice(len(ids), size=min(b.correctness_scenes, len(ids)), replace=False).tolist())
        say(f"correctness: re-rendering {len(pick)} test scenes without each attribute they show")
        scenes = K.render_scene_set(test_root, [ids[i] for i in pick], names)
        for s in range(n_seeds):
            res_s: dict[str, Any] = {}
            for rname in ("siam_joint", "siam_no_finetune"):
                res_s[rname] = K.siam_correctness(load_checkpoint(paths[s][MODELS[rname]]), scenes, batch_size=b.eval_batch_size)
            res_s["gradcam_baseline"] = K.gradcam_correctness(load_checkpoint(paths[s]["baseline"]), scenes)
            res_s["random"] = {"correctness": K.random_correctness(res_s["siam_joint"]["effects"], scenes.present, seed=s)}
            correct[s] = res_s
        say("correctness: " + ", ".join(f"seed {s} SIAM {_fmt(_finite_mean(c['siam_joint']['correctness']))} Grad-CAM "
                                        f"{_fmt(_finite_mean(c['gradcam_baseline']['correctness']))}"
                                        for s, c in correct.items()))
    timings["correctness"] = time.perf_counter() - t

    train_presence = (x_train.reshape(len(x_train), len(names), -1).max(-1) > 0).mean(0)
    report = assemble(
        names=names, seeds=list(range(n_seeds)), budget=budget_name, budget_config=b.to_dict(),
        per_seed=per_seed, ceilings=ceilings, oracle=oracle, shuffled=shuffled, randomised=randomised,
        decorrelated=decorrelated, correctness=correct, train_presence=dict(zip(names, train_presence.tolist())),
        floor=floor, counts=counts, notes=notes, n_boot=b.n_boot,
        worlds={"train": str(world), "test": str(test_root), "test_split": split,
                "decorrelated": str(decorrelated_root) if decorrelated_root else None},
    )
    timings["total"] = time.perf_counter() - start
    report["wall_time_s"] = timings["total"]
    report["timings_s"] = timings
    write_truth(report, out)
    say(f"wrote {out / 'truth.json'} and {out / 'truth.md'} in {timings['total']:.0f} s")
    return report


def _with_overrides(b: Any, name: str, overrides: Sequence[str]) -> tuple[Any, str]:
    """The budget with ``overrides`` appended to its own, and its name with them (the keys themselves
    are checked when the stages' configs are built, before any world is generated)."""
    bad = [o for o in overrides if not isinstance(o, str) or "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.mask_weight=0.03), got {bad}")
    return dataclasses.replace(b, overrides=(*b.overrides, *overrides)), name + " + " + " ".join(overrides)


def run(args: argparse.Namespace) -> int:
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be an integer >= 1, got {args.seeds}")
    report = truth(args.out, data=args.data, seeds=args.seeds, budget=args.budget,
                   overrides=getattr(args, "overrides", None) or ())
    for line in report.get("summary", []):
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from siam.cli import main

    sys.exit(main(["truth", *sys.argv[1:]]))
