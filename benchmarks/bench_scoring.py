"""(4) Batch scoring end to end (``siam score``: checkpoint hash and load, DataLoader decoding,
inference, Parquet parts, manifest) vs a plain batched forward over already-decoded tensors with
the same prepared model, ResNet-50 SIAM at 450 px on 640x480 JPEGs. Goal: throughput ratio >= 0.9.
The fixed setup (about 3 s, mostly ``load_checkpoint``) weighs on a job this short; the ratio
after setup is what long jobs converge to, and is reported too."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import PhotoSet, Result, at_least, interleaved_best, randomise_heads

BATCH = 4


def run(quick: bool = False) -> list[Result]:
    import siam
    from siam.data.images import load_image
    from siam.data.transforms import eval_transform
    from siam.scoring import read_scores, score_images
    from siam.scoring.inference import prepare_for_inference

    torch.manual_seed(0)
    copies = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="siam-bench-score-") as tmp, PhotoSet(copies=copies) as paths:
        ckpt = siam.save_checkpoint(randomise_heads(siam.build_model(backbone="resnet50")), Path(tmp) / "m.safetensors")
        model, ctx = prepare_for_inference(siam.load_checkpoint(ckpt), "auto", device="cpu")
        transform = eval_transform(model.preprocessing)
        images = torch.stack([transform(load_image(p)) for p in paths])  # decoded before timing
        with torch.inference_mode(), ctx:
            model(images[:BATCH])  # warm-up (oneDNN primitives)
        runs = iter(range(1000))
        summaries: dict[str, object] = {}

        def plain() -> None:
            with torch.inference_mode(), ctx:
                for i in range(0, len(images), BATCH):
                    model(images[i : i + BATCH])

        def score(workers: int | None) -> None:
            out = Path(tmp) / f"out{next(runs)}"
            summary = score_images(ckpt, paths[0].parent, out, batch_size=BATCH, workers=workers, progress=False)
            assert read_scores(out).num_rows == len(paths) == summary.ok
            summaries[str(workers)] = summary

        times = interleaved_best({"plain": plain, "default": lambda: score(None), "worker": lambda: score(0)},
                                 repeats=1 if quick else 2, warmup=0)
        t_plain, t_score, t_worker = (times.wall[k] for k in ("plain", "default", "worker"))
        summary = summaries["None"]
    n = len(paths)
    goal, ok = at_least(t_plain / t_score, 0.9)
    steady = t_score - summary.setup_seconds
    return [
        Result("scoring", "plain batched forward (pre-decoded)", n / t_plain, "img/s",
               note=f"batch {BATCH}, {n} images"),
        Result("scoring", "siam score end to end", n / t_score, "img/s",
               note=f"default workers (CPU count - 1); includes {summary.setup_seconds:.1f} s setup "
               "(checkpoint hash + load)"),
        Result("scoring", "siam score / plain forward throughput, end to end", t_plain / t_score, "", goal, ok),
        Result("scoring", "siam score / plain forward throughput, after setup", t_plain / steady, "",
               note="what long jobs converge to"),
        Result("scoring", "same with --workers 0 (decoding in process), end to end", t_plain / t_worker, ""),
    ]
