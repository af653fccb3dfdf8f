"""``siam train``: train one stage (sun, son-head, joint, baseline) with Lightning.

Examples::

    siam train --config configs/quickstart.yaml --stage sun --data runs/q/data --out runs/q/sun
    siam train --config configs/quickstart.yaml --stage joint --data runs/q/data --out runs/q/joint \\
        --init-from runs/q/sun/model.safetensors
    siam train ... --resume                      # continue from OUT/checkpoints/last.ckpt
    siam train ... --devices 2 --strategy ddp    # DDP (add --num-nodes N on a cluster)
    siam train ... --precision bf16-mixed --channels-last --set optim.lr=3e-4
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from siam.training.config import STAGES, TrainConfig, load_config

__all__ = ["add_arguments", "run", "config_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="recipe file (e.g. configs/paper.yaml, configs/quickstart.yaml)")
    parser.add_argument("--stage", choices=STAGES, help="which stage to train (default: the config's)")
    parser.add_argument("--data", metavar="DIR", help="data folder (sets data.root): the 'siam synth' layout or the "
                        "CSV format (attributes.csv / targets.csv), detected from its contents")
    parser.add_argument("--out", metavar="DIR", help="run folder (checkpoints, logs, model.safetensors)")
    parser.add_argument("--init-from", metavar="CKPT", help="start from a previous stage's .safetensors/.ckpt or its --out folder")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                        help="continue an interrupted run (default file: OUT/checkpoints/last.ckpt)")
    eng = parser.add_argument_group("engine (Lightning)")
    eng.add_argument("--accelerator", help="cpu, gpu, auto, ...")
    eng.add_argument("--devices", help="number of devices or 'auto' (DDP when > 1)")
    eng.add_argument("--num-nodes", type=int, help="nodes for multi-node DDP")
    eng.add_argument("--strategy", help="auto, ddp, ddp_spawn, ...")
    eng.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed, bf16-true")
    eng.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    eng.add_argument("--max-epochs", type=int)
    eng.add_argument("--max-steps", type=int)
    eng.add_argument("--batch-size", type=int, help="SUN and SoN batch size per step")
    eng.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set trainer.checkpoint_every_n_steps=50")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved config: recipe < its stage section < flags < ``--set``."""
    flags: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        node = flags
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value

    put("data.root", args.data)
    put("out", args.out)
    put("init_from", args.init_from)
    put("trainer.accelerator", args.accelerator)
    put("trainer.devices", _devices(args.devices))
    put("trainer.num_nodes", args.num_nodes)
    put("trainer.strategy", args.strategy)
    put("trainer.precision", args.precision)
    put("trainer.channels_last", args.channels_last)
    put("trainer.max_epochs", args.max_epochs)
    put("trainer.max_steps", args.max_steps)
    put("data.batch_size", args.batch_size)
    put("data.son_batch_size", args.batch_size)
    put("optim.lr", args.lr)
    return load_config(args.config, stage=args.stage, overrides=[flags, *args.set])


def _devices(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def run(args: argparse.Namespace) -> int:
    import yaml

    cfg = config_from_args(args)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from siam.training.engine import fit

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    result = fit(cfg, resume=args.resume)
    if result.model_path is not None:
        shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val/", "train/loss"))}
        print(f"siam train: stage {cfg.stage} finished at global step {result.global_step} "
              f"in {result.wall_time_s:.0f} s; model: {result.model_path}; resume file: {result.last_checkpoint}; "
              f"metrics: {shown}")
    return 0
