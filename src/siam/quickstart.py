"""``siam quickstart --out DIR``: the offline end-to-end job (synth -> train 3 models -> evaluate).

1. ``siam synth`` renders the planted-truth data into ``DIR/data`` (or ``--data`` reuses a folder in
   that layout, or in the CSV format, told apart by its contents: :func:`siam.data.csv_folder.data_layout`;
   a CSV copy written by ``siam data to-csv`` carries the planted truth, a CSV folder without
   ``truth/`` gets the report without the planted-truth metrics, which it lists as left out);
2. four Lightning stages with the ``tiny`` backbone (recipe :data:`RECIPE`, also shipped as
   ``configs/quickstart.yaml``): ``baseline``; ``sun`` then ``son-head`` (f frozen: the paper's
   "no finetuning" row); ``joint`` (L_SUN + 0.1 L_SoN) from the no-finetuning model;
3. evaluation on the held-out test split (Tables 2/3 and planted-truth recovery);
4. ``DIR/report.md`` + ``DIR/report.json`` (keys in the README), each stage's
   ``DIR/<stage>/model.safetensors``, and, when :mod:`siam.explain` provides them, the HTML
   explanation report and faithfulness numbers.

Re-running with the same ``--out`` continues: finished stages are kept, an interrupted stage
resumes from its ``last.ckpt``; ``--overwrite`` starts again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from siam.errors import ConfigError, DatasetError, SiamError
from siam.resources import usable_cores

__all__ = ["RECIPE", "STAGE_DIRS", "TARGETS", "TARGET_CEILINGS", "add_arguments", "run", "quickstart", "check_targets",
           "measured_ceilings", "stage_configs", "trained_model", "start_stage_process"]

#: The CPU recipe (identical to configs/quickstart.yaml; a test keeps them equal).
RECIPE: dict[str, Any] = {
    "model": {"backbone": "tiny", "pretrained": False, "grid": 8, "border": 0},
    "preprocessing": {"resize": 64, "crop": 64, "max_rotation": 0.0, "hflip": True},
    "data": {"batch_size": 16, "son_batch_size": 16, "val_batch_size": 128, "num_workers": 0, "cache": True},
    "optim": {"lr": 0.002, "lr_schedule": "cosine", "son_weight": 0.1, "template_smoothness": 0.3},
    "trainer": {
        "accelerator": "cpu", "devices": 1, "max_epochs": 10, "checkpoint_every_n_steps": 200,
        "log_every_n_steps": 10, "val_every_n_epochs": 0, "num_threads": 1, "channels_last": True,
    },
    "stages": {
        "sun": {"trainer": {"max_epochs": 16}},
        "son-head": {"trainer": {"max_epochs": 6}, "optim": {"lr": 0.01}},
        "joint": {"trainer": {"max_epochs": 10}, "optim": {"lr": 0.001}},
        "baseline": {"trainer": {"max_epochs": 20}},
    },
}

#: Run folder of each stage, in training order, and the stage each one starts from.
STAGE_DIRS: dict[str, tuple[str, str | None]] = {
    "baseline": ("baseline", None),
    "sun": ("sun", None),
    "son_head": ("son-head", "sun"),
    "joint": ("joint", "son_head"),
}
#: Report name -> stage folder.
REPORT_MODELS: dict[str, str] = {"baseline": "baseline", "siam_no_finetune": "son_head", "siam_joint": "joint"}

#: (name, model, key, comparison, threshold) of the issue's targets on the held-out split.
TARGETS: tuple[tuple[str, str], ...] = (
    ("SIAM joint RMSE <= 1.15 x noise floor", "<= 1.15"),
    ("SIAM joint RMSE within 5% of the baseline's", "<= 1.05 x baseline"),
    ("SIAM joint SUN mAP >= 0.90", ">= 0.90"),
    ("contribution_r >= 0.90", ">= 0.90"),
    ("template_r >= 0.80", ">= 0.80"),
    ("template_sign_agreement = 1.0", "= 1.0"),
    ("mass_in_mask >= 0.70", ">= 0.70"),
    ("SIAM total_map_r above the baseline CAM's", "> baseline"),
    ("total wall time <= 10 minutes", "<= 600 s"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (report, models, data)")
    parser.add_argument("--data", metavar="DIR", help="reuse a folder in the 'siam synth' layout or the CSV format "
                        "(attributes.csv + targets.csv; planted-truth metrics only when it carries truth/, as "
                        "'siam data to-csv' writes it) instead of generating one")
    parser.add_argument("--config", metavar="YAML", help="recipe (default: the built-in one = configs/quickstart.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key for every stage, e.g. --set trainer.max_steps=5")
    parser.add_argument("--n-sun", type=int, help="synth: SUN-format images (default: siam synth's)")
    parser.add_argument("--n-son", type=int, help="synth: ScenicOrNot-format images (default: siam synth's)")
    parser.add_argument("--seed", type=int, default=0, help="synth seed (default 0)")
    parser.add_argument("--workers", type=int, default=min(2, usable_cores()), help="synth processes")
    parser.add_argument("--no-explain", action="store_true", help="skip the HTML explanation report")
    parser.add_argument("--overwrite", action="store_true", help="delete earlier results in --out first")


def _recipe(path: str | None) -> dict[str, Any]:
    from siam.training.config import read_recipe

    return json.loads(json.dumps(RECIPE)) if path is None else read_recipe(path)


def _check_layout(root: Path) -> str:
    """``"synth"`` or ``"csv"`` (from the folder's contents), with what the four stages need there."""
    from siam.data.csv_folder import ATTRIBUTES_FILE, TARGETS_FILE, data_layout

    if root.is_dir() and data_layout(root) == "csv":
        lacking = [f for f in (ATTRIBUTES_FILE, TARGETS_FILE) if not (root / f).is_file()]
        if lacking:
            raise DatasetError(f"--data {str(root)!r} is a CSV folder without {lacking}: the stages train the "
                               f"attributes on {ATTRIBUTES_FILE} and the score on {TARGETS_FILE}")
        return "csv"
    need = [root / "sun", root / "son" / "votes.tsv"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise DatasetError(
            f"--data {str(root)!r} is not in the 'siam synth' layout: missing {missing}; expected sun/ "
            "(SUN .mat files + images/), son/votes.tsv + son/images/, optional son_attributes.csv and truth/"
        )
    return "synth"


def _prepare_out(out: Path, overwrite: bool) -> None:
    if overwrite:
        for p in [*(out / n for n in STAGE_DIRS), out / "data", out / "explain"]:
            if p.is_dir():
                shutil.rmtree(p)
        for f in ("report.json", "report.md"):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def trained_model(name: str, cfg: Any, *, tag: str = "siam quickstart") -> Path | None:
    """The stage's finished model file when ``cfg.out`` already holds one trained with the same
    recipe (reused), None when it is not trained yet; :class:`ConfigError` when it was trained with
    another recipe (nothing is silently reused or overwritten)."""
    from siam.checkpoint import read_meta

    out = Path(cfg.out)
    model = out / "model.safetensors"
    if not model.is_file():
        return None
    saved = _with_defaults(read_meta(model).get("train_config") or {})
    if saved is not None and _comparable(saved) == _comparable(cfg.to_dict()):
        print(f"{tag}: {name}: already trained ({model}), kept", flush=True)
        return model
    raise ConfigError(f"{out} holds a {name} model trained with another recipe; use --overwrite or another --out")


def stage_configs(out: Path, data_dir: Path, raw: dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """The four stages' :class:`~siam.training.config.TrainConfig` (keys of :data:`STAGE_DIRS`),
    each in ``out/<name>``, on ``data_dir``, every SIAM stage but ``sun`` starting from its parent's
    model; ``overrides`` (``KEY=VALUE``) apply to every stage."""
    from siam.training.config import config_from_dict, parse_override

    configs = {}
    for name, (stage, parent) in STAGE_DIRS.items():
        extra = [f"out={out / name}", f"data.root={data_dir}"]
        if parent is not None:
            extra.append(f"init_from={out / parent / 'model.safetensors'}")
        parsed = [parse_override(o) for o in [*extra, *(overrides or [])]]
        configs[name] = config_from_dict(json.loads(json.dumps(raw)), stage=stage, overrides=parsed)
    return configs


def _train_stage(name: str, cfg: Any, callbacks: tuple[Any, ...] = (), *, tag: str = "siam quickstart") -> Path:
    """Train (or reuse, or resume) one stage; returns its model file."""
    from siam.training.engine import LAST_CKPT, fit

    out = Path(cfg.out)
    model = trained_model(name, cfg, tag=tag)
    if model is not None:
        return model
    resume = (out / LAST_CKPT).is_file()
    print(f"{tag}: training {name} ({cfg.stage})" + (" - resuming" if resume else ""), flush=True)
    res = fit(cfg, resume=resume or None, callbacks=list(callbacks))
    print(f"{tag}: {name} done in {res.wall_time_s:.0f} s ({res.global_step} steps)", flush=True)
    return out / "model.safetensors"


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any] | None:
    """A saved train config completed with today's defaults (a model written before a key existed
    was trained with that key's default), or None when it no longer validates."""
    from siam.training.config import config_from_dict

    try:
        return config_from_dict(saved).to_dict()
    except ConfigError:
        return None


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A train config without the keys that do not change what is trained (display only)."""
    c = json.loads(json.dumps(config))
    c.get("trainer", {}).pop("progress_bar", None)
    c.get("trainer", {}).pop("deterministic", None)  # kernel choice only; its default changed (was false)
    return c


class _Child:
    """A stage running in a child process, with its log file."""

    def __init__(self, name: str, cmd: list[str], log: Path) -> None:
        self.name, self.log_path = name, log
        self.log = open(log, "w")  # noqa: SIM115 - closed in wait()/stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})

    def check(self) -> None:
        """Raise at once if the child already failed."""
        code = self.proc.poll()
        if code not in (None, 0):
            self.wait()

    def wait(self) -> None:
        code = self.proc.wait()
        self.log.close()
        if code != 0:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise SiamError(f"training {self.name} failed (exit code {code}); see {self.log_path}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _freed_core_callback(child: "_Child | None", threads: int) -> Any:
    """A Lightning callback that raises this process's torch threads to ``threads`` at the start of
    a stage when the baseline's child process has exited by then, so its core does not sit idle.

    Only at a stage boundary, never within a stage: a thread count that changed partway through a
    stage would change the summation order from a moment set by the other process's timing, and two
    runs with the same seed would then differ. The count a stage ran with is printed.
    """
    import lightning as L
    import torch

    class _UseFreedCore(L.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if torch.get_num_threads() < threads and (child is None or child.proc.poll() is not None):
                torch.set_num_threads(threads)
            print(f"siam quickstart: this stage uses {torch.get_num_threads()} thread(s)", flush=True)

    return _UseFreedCore()


def start_stage_process(name: str, cfg: Any, out: Path, *, tag: str = "siam quickstart") -> _Child | None:
    """``siam train`` for one stage in a child process (its log: ``out/<name>.log``); None if the
    stage is already trained."""
    import yaml

    run_dir = Path(cfg.out)
    if (run_dir / "model.safetensors").is_file():
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "quickstart_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    # Its log is a file, so training prints one plain line per epoch there (no progress bar).
    cmd = [sys.executable, "-m", "siam.cli", "train", "--config", str(cfg_path)]
    from siam.training.engine import LAST_CKPT

    if (run_dir / LAST_CKPT).is_file():
        cmd.append("--resume")
    print(f"{tag}: training {name} ({cfg.stage}) in a child process; log: {out / (name + '.log')}", flush=True)
    return _Child(name, cmd, out / f"{name}.log")


def _finish_stage_process(name: str, child: _Child | None, cfg: Any) -> Path:
    if child is None:
        return _train_stage(name, cfg)  # already trained: checks the recipe and reuses it
    child.wait()
    model = Path(cfg.out) / "model.safetensors"
    if not model.is_file():
        raise SiamError(f"training {name} exited without writing {model}; see {child.log_path}")
    print(f"siam quickstart: {name} done", flush=True)
    return model


def _has_truth(root: Path) -> bool:
    """Whether the data folder carries planted truth in its layout's form (errors for a broken one)."""
    from siam.truth.worlds import world_truth

    return world_truth(root) is not None


def _notes(report: dict[str, Any]) -> list[str]:
    """What limits the numbers, measured on the same data (ceilings) and the run's CPU time."""
    notes = []
    if report.get("planted_truth") is False:
        from siam.truth.worlds import TRUTH_HELP

        notes.append("No planted truth in --data (no truth/): left out of this report, because they need it: "
                     + ", ".join(PLANTED_ONLY) + f"; their targets read n/a. To measure them, {TRUTH_HELP}.")
    explain = report.get("explain") or {}
    if explain.get("skipped"):
        notes.append(f"Explanation report skipped: {explain['skipped']}.")
    planted = (report["models"].get("siam_joint") or {}).get("planted") or {}
    ceiling = report.get("sun_map_ceiling")
    if ceiling is not None:
        notes.append(f"SUN mAP ceiling {ceiling:.3f}: ranking each attribute by its true visible area, the best any "
                     "detector can do against the annotators' noisy labels (>= 0.5 positive).")
    if planted.get("mass_in_mask_coverage_map") is not None:
        notes.append(f"mass_in_mask of a map equal to the true coverage of each cell of the model's grid: "
                     f"{planted['mass_in_mask_coverage_map']:.3f} (thin objects cover little of any cell).")
    tr = (planted.get("template_r") or {}).get("per_attribute") or {}
    if tr:
        notes.append("template_r averages the attributes whose planted template varies in space, on the cells where "
                     "each is seen in the test images (elsewhere no score constrains a template): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in tr.items() if v is not None) + ".")
    every = planted.get("template_r_all_cells") or {}
    if every.get("value") is not None:
        notes.append(f"template_r over all cells, unseen ones included (a detail, inflated by cells no data "
                     f"constrains): {every['value']:.3f}.")
    above = [t["name"] for t in report.get("targets") or [] if t.get("above_ceiling")]
    if above:
        notes.append("Targets above their measured ceiling (defects of the target, not of the model): "
                     + "; ".join(above) + ".")
    oracle = report.get("oracle_f") or {}
    if oracle.get("contribution_r") is not None:
        tr = "n/a" if oracle.get("template_r") is None else f"{oracle['template_r']:.3f}"
        notes.append(f"oracle-f (g trained with the son-head recipe on the true masks instead of f's maps): "
                     f"contribution_r {oracle['contribution_r']:.3f}, template_r {tr}; the gap "
                     "from SIAM to these is f's, the gap from these to 1 is g's recipe, the noise and the data size.")
    if report.get("cpu_time_s") is not None:
        notes.append(f"CPU time of all processes {report['cpu_time_s']:.0f} s for {report['wall_time_s']:.0f} s of "
                     "wall time (the machine's other load included).")
    return notes


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (synth workers, the baseline process)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


#: The targets (indices into :data:`TARGETS`) measured against planted truth: n/a without it.
TRUTH_TARGETS: frozenset[int] = frozenset({0, 3, 4, 5, 6, 7})
#: What a run on data without planted truth leaves out of the report.
PLANTED_ONLY: tuple[str, ...] = ("rmse_over_noise_floor", "contribution_r", "template_r", "template_sign_agreement",
                                 "mass_in_mask", "total_map_r", "sun_map_ceiling", "oracle_f")


#: Target index -> (the measured ceiling's key in ``report["ceilings"]``, the target's threshold on
#: the ceiling's scale, whether higher is better). A target above its ceiling is a defect.
TARGET_CEILINGS: dict[int, tuple[str, float, bool]] = {
    0: ("rmse_over_noise_floor", 1.15, False),
    2: ("sun_map", 0.90, True),
    3: ("contribution_r", 0.90, True),
    4: ("template_r", 0.80, True),
    5: ("template_sign_agreement", 1.0, True),
    6: ("mass_in_mask", 0.70, True),
}


def measured_ceilings(report: dict[str, Any], oracle: dict[str, Any] | None) -> dict[str, float | None]:
    """Each target metric's ceiling, measured on the same data: the noise floor (RMSE ratio 1.0),
    SUN mAP of the true visible areas, mass_in_mask of the coverage map, and contribution_r,
    template_r and sign agreement of the oracle-f run (g on the true masks; :mod:`siam.truth.oracle`)."""
    planted = ((report["models"].get("siam_joint") or {}).get("planted")) or {}
    o = oracle or {}
    return {
        "rmse_over_noise_floor": 1.0 if report.get("noise_floor_rmse") else None,
        "sun_map": report.get("sun_map_ceiling"),
        "mass_in_mask": planted.get("mass_in_mask_coverage_map"),
        "contribution_r": o.get("contribution_r"),
        "template_r": o.get("template_r"),
        "template_sign_agreement": o.get("template_sign_agreement"),
    }


def _ceiling_fields(i: int, value: float | None, ceilings: dict[str, Any]) -> dict[str, Any]:
    """``ceiling``, ``fraction`` (of the ceiling; for the RMSE ratio: ceiling / value) and
    ``above_ceiling`` (the target asks for more than the ceiling allows: a defect of the target)."""
    if i not in TARGET_CEILINGS:
        return {"ceiling": None, "fraction": None, "above_ceiling": None}
    key, threshold, higher = TARGET_CEILINGS[i]
    c = ceilings.get(key)
    if not isinstance(c, (int, float)) or math.isnan(c):
        return {"ceiling": None, "fraction": None, "above_ceiling": None}
    frac = None
    if value is not None and c:
        frac = value / c if higher else (c / value if value else None)
    return {"ceiling": float(c), "fraction": frac, "above_ceiling": bool(threshold > c if higher else threshold < c)}


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, measured: ``[{"name", "value", "target", "met", "ceiling", "fraction",
    "above_ceiling"}]`` (ceilings from ``report["ceilings"]``, see :func:`measured_ceilings`);
    ``met`` is None (n/a) for :data:`TRUTH_TARGETS` when ``report["planted_truth"]`` is False."""
    models = report["models"]
    joint, base = models.get("siam_joint", {}), models.get("baseline", {})
    floor = report.get("noise_floor_rmse")

    def get(m: dict[str, Any], k: str) -> float | None:
        v = m.get(k)
        return float(v) if isinstance(v, (int, float)) else None

    rj, rb = get(joint, "son_rmse"), get(base, "son_rmse")
    tj, tb = get(joint, "total_map_r"), get(base, "total_map_r")
    values: list[tuple[float | None, bool]] = [
        (rj / floor if rj is not None and floor else None, rj is not None and bool(floor) and rj <= 1.15 * floor),
        (rj / rb if rj is not None and rb else None, rj is not None and rb is not None and rj <= 1.05 * rb),
        (get(joint, "sun_map"), (get(joint, "sun_map") or 0) >= 0.90),
        (get(joint, "contribution_r"), (get(joint, "contribution_r") or 0) >= 0.90),
        (get(joint, "template_r"), (get(joint, "template_r") or 0) >= 0.80),
        (get(joint, "template_sign_agreement"), get(joint, "template_sign_agreement") == 1.0),
        (get(joint, "mass_in_mask"), (get(joint, "mass_in_mask") or 0) >= 0.70),
        (None if tj is None or tb is None else tj - tb, tj is not None and tb is not None and tj > tb),
        (report.get("wall_time_s"), (report.get("wall_time_s") or 1e9) <= 600),
    ]
    ceilings = report.get("ceilings") or {}
    no_truth = report.get("planted_truth") is False
    return [{"name": n, "value": v, "target": t, "met": None if no_truth and i in TRUTH_TARGETS else bool(ok),
             **_ceiling_fields(i, v, ceilings)}
            for i, ((n, t), (v, ok)) in enumerate(zip(TARGETS, values))]


def _oracle(data_dir: Path, son_head_config: Any) -> dict[str, Any] | None:
    """The oracle-f ceiling on the quickstart's own data (seconds; None without planted truth)."""
    from siam.truth.oracle import oracle_ceiling

    print("siam quickstart: oracle-f ceiling (g trained on the true masks)", flush=True)
    return oracle_ceiling(data_dir, son_head_config=son_head_config, split="test",
                          seed=son_head_config.trainer.seed)


def _explain(out: Path, data: Path, models: dict[str, Path], report: dict[str, Any]) -> dict[str, Any]:
    """HTML explanation report + faithfulness via :mod:`siam.explain` (skipped if unavailable)."""
    try:
        from siam.explain import quickstart_hook  # type: ignore[attr-defined]
    except ImportError:
        return {"skipped": "siam.explain provides no quickstart_hook"}
    return dict(quickstart_hook(out=out / "explain", data=data, models=models, report=report))


def quickstart(
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    recipe: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    synth: dict[str, Any] | None = None,
    explain: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline; returns the report dict (also written to ``out/report.{json,md}``)."""
    from siam.evaluation.cli import evaluate_models
    from siam.evaluation.report import build_report, write_report

    start = time.perf_counter()
    cpu0 = _cpu_seconds()
    out = Path(out)
    _prepare_out(out, overwrite)
    timings: dict[str, float] = {}
    if data is None:
        data_dir = out / "data"
        if not (data_dir / "truth" / "meta.json").is_file():
            from siam.synth import SynthConfig, generate

            t = time.perf_counter()
            opts = dict(synth or {})
            workers = int(opts.pop("workers", 1))
            seed = int(opts.pop("seed", 0))
            print(f"siam quickstart: generating the planted-truth data in {data_dir}", flush=True)
            generate(data_dir, seed=seed, config=SynthConfig(**opts), workers=workers, overwrite=True,
                     progress=True)
            timings["synth"] = time.perf_counter() - t
    else:
        data_dir = Path(data)
    layout = _check_layout(data_dir)
    has_truth = _has_truth(data_dir)
    raw = recipe if recipe is not None else _recipe(None)
    configs = stage_configs(out, data_dir, raw, overrides)
    # Two tracks on two cores: the baseline in a child process, the SIAM chain here.
    t = time.perf_counter()
    child = start_stage_process("baseline", configs["baseline"], out)
    paths: dict[str, Path] = {}
    try:
        cores = usable_cores()
        for name in ("sun", "son_head", "joint"):
            t_stage = time.perf_counter()
            threads = configs[name].trainer.num_threads
            # The baseline's core, once it is free (at once if the baseline was already trained).
            callbacks = (_freed_core_callback(child, cores),) if threads is not None and threads < cores else ()
            paths[name] = _train_stage(name, configs[name], callbacks)
            timings[name] = time.perf_counter() - t_stage
            if child is not None:
                child.check()
    except BaseException:
        if child is not None:
            child.stop()
        raise
    paths["baseline"] = _finish_stage_process("baseline", child, configs["baseline"])
    timings["training"] = time.perf_counter() - t
    t = time.perf_counter()
    print("siam quickstart: evaluating on the held-out test split", flush=True)
    chosen = {rname: paths[d] for rname, d in REPORT_MODELS.items()}
    results, extra = evaluate_models(chosen, split="test", data=data_dir,
                                     split_seed=configs["joint"].data.split_seed)
    timings["evaluate"] = time.perf_counter() - t
    floor = extra.pop("noise_floor_rmse", None)
    report = build_report(results, noise_floor_rmse=floor, split="test", extra=extra)
    report["data_layout"], report["planted_truth"] = layout, has_truth
    if explain and layout == "csv":
        report["explain"] = {"skipped": "the explanation report (siam.explain.quickstart_hook) reads the 'siam synth' "
                             "layout; run 'siam explain' on the CSV folder's images instead"}
    elif explain:
        t = time.perf_counter()
        report["explain"] = _explain(out, data_dir, chosen, report)
        timings["explain"] = time.perf_counter() - t
    t = time.perf_counter()
    report["oracle_f"] = _oracle(data_dir, configs["son_head"]) if has_truth else None
    timings["oracle_f"] = time.perf_counter() - t
    report["ceilings"] = measured_ceilings(report, report["oracle_f"])
    report["wall_time_s"] = time.perf_counter() - start
    report["timings_s"] = timings
    report["cpu_time_s"] = _cpu_seconds() - cpu0  # all processes: compare with 2 cores x wall time
    report["targets"] = check_targets(report)
    report["notes"] = _notes(report)
    write_report(report, out, title="SIAM quickstart report")
    return report


def run(args: argparse.Namespace) -> int:
    from siam.evaluation.report import render_markdown

    synth: dict[str, Any] = {"seed": args.seed, "workers": args.workers}
    if args.n_sun is not None:
        synth["n_sun"] = args.n_sun
    if args.n_son is not None:
        synth["n_son"] = args.n_son
    report = quickstart(
        args.out, data=args.data, recipe=_recipe(args.config), overrides=list(args.set), synth=synth,
        explain=not args.no_explain, overwrite=args.overwrite,
    )
    print(render_markdown(report, title="SIAM quickstart report"))
    missed = [t["name"] for t in report["targets"] if t["met"] is False]
    na = [t["name"] for t in report["targets"] if t["met"] is None]
    print(f"siam quickstart: wrote {Path(args.out) / 'report.md'} and report.json in {report['wall_time_s']:.0f} s; "
          + (f"targets missed: {missed}" if missed else "all targets met" if not na else "no measured target missed")
          + (f"; n/a without planted truth: {na}" if na else ""))
    print(_purpose(report))
    return 0


def _purpose(report: dict[str, Any]) -> str:
    """The closing message: what the quickstart's models are for (and not for)."""
    from siam.checkpoint import read_meta
    from siam.provenance import is_synthetic, trained_on

    joint = ((report.get("models") or {}).get("siam_joint") or {}).get("checkpoint")
    record = trained_on(read_meta(joint)) if joint and Path(joint).is_file() else {"kind": "unknown"}
    if not is_synthetic(record):
        return f"siam quickstart: the models were trained on {record.get('summary', 'unknown data')}."
    return (
        "siam quickstart: these models were trained on synthetic planted scenes (`siam synth`), where the "
        "true attribute maps and templates are known: they are for checking that SIAM recovers what was "
        "planted (report.md), not for photographs. On a real photo they answer with confidence and mean "
        "nothing (siam explain/serve/score say so). For real images, train on SUN Attributes + "
        "ScenicOrNot: siam data download ..., then siam train --config configs/paper.yaml."
    )
