"""(6) ``siam score`` over 1 and 2 processes on this machine: images/s of each and their ratio, with
the core count (2 processes on 2 cores cannot reach 2x: one process already uses both cores, for
inference threads and a decoding worker). ResNet-50 SIAM at 450 px on the 640x480 JPEGs, ranks
started the way torchrun starts them (``RANK``/``WORLD_SIZE``, ``OMP_NUM_THREADS=1`` per rank).

Also the single-core decode rate (``load_image`` + the evaluation transform, one thread), and from
it the DataLoader workers a GPU needs to stay fed, for an assumed GPU rate: NVIDIA's published
ResNet-50 v1.5 PyTorch mixed-precision inference throughput on a V100 (3,382 img/s at batch 256,
224 px; DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, pytorch-21.03
container), scaled by pixels to 450 px, and to an A100 by the same README's mixed-precision training
ratio A100 / V100 (2,470 / 1,200 img/s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, PhotoSet, Result, best_time, randomise_heads

BATCH = 4
PART_SIZE = 2  # small parts, so that both ranks get the same number of images
V100_AMP_IMG_S_224 = 3382.0  # ResNet-50 v1.5, PyTorch AMP, batch 256, 224 px (see module doc)
A100_OVER_V100 = 2470.0 / 1200.0  # same README, mixed-precision training throughput, 1 GPU
CROP, REFERENCE_CROP = 450, 224

DRIVER = """
import json, sys
from siam.scoring import score_images
workers = None if sys.argv[6] == "default" else int(sys.argv[6])
s = score_images(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=int(sys.argv[4]), part_size=int(sys.argv[5]),
                 workers=workers, progress=False)
print(json.dumps({"rows": s.ok + s.errors, "seconds": s.seconds, "setup": s.setup_seconds, "complete": s.complete}))
"""


def _job(ckpt: Path, images: Path, out: Path, world: int, *, one_thread: bool = False) -> dict[str, float]:
    """Run ``world`` ranks at once; images/s end to end (launch to last exit, imports included) and
    after setup (rows / the slowest rank's time after its checkpoint load). ``one_thread``: a single
    process set up like one rank of a 2-rank node (1 thread, decoding in process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    if world > 1:  # as torchrun: one thread per rank, ranks share the node's cores for workers
        env.update(OMP_NUM_THREADS="1", WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    if one_thread:
        env.update(OMP_NUM_THREADS="1")
    workers = "0" if one_thread else "default"
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", DRIVER, str(ckpt), str(images), str(out), str(BATCH), str(PART_SIZE), workers],
                         env=dict(env, **({"RANK": str(r), "LOCAL_RANK": str(r)} if world > 1 else {})),
                         stdout=subprocess.PIPE, text=True)
        for r in range(world)
    ]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs) or not any(o["complete"] for o in outs):
        raise SystemExit(f"scoring with {world} process(es) failed: {outs}")
    rows = sum(o["rows"] for o in outs)
    return {"end_to_end": rows / wall, "after_setup": rows / max(o["seconds"] - o["setup"] for o in outs),
            "rows": rows}


def run(quick: bool = False) -> list[Result]:
    import torch

    import siam
    from siam.data.images import load_image
    from siam.data.transforms import eval_transform

    cores = os.cpu_count() or 1
    rounds = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="siam-bench-dist-") as tmp, PhotoSet(copies=1 if quick else 2) as paths:
        ckpt = siam.save_checkpoint(randomise_heads(siam.build_model(backbone="resnet50")), Path(tmp) / "m.safetensors")
        transform = eval_transform(siam.load_checkpoint(ckpt).preprocessing)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            decode = best_time(lambda: [transform(load_image(p)) for p in paths], repeats=2)
        finally:
            torch.set_num_threads(threads)
        per_core = len(paths) / decode
        configs = {"1": (1, False), "1x1": (1, True), "2": (2, False)}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        for k in range(rounds):  # interleaved: a change of load hits all
            for name, (world, one_thread) in configs.items():
                runs[name].append(_job(ckpt, paths[0].parent, Path(tmp) / f"out{k}-{name}", world,
                                       one_thread=one_thread))
    best = {w: max(r["after_setup"] for r in rs) for w, rs in runs.items()}
    e2e = {w: max(r["end_to_end"] for r in rs) for w, rs in runs.items()}
    paired = [b["after_setup"] / a["after_setup"] for a, b in zip(runs["1"], runs["2"])]
    paired_1x1 = [b["after_setup"] / a["after_setup"] for a, b in zip(runs["1x1"], runs["2"])]
    gpu_v100 = V100_AMP_IMG_S_224 * (REFERENCE_CROP / CROP) ** 2
    gpu_a100 = gpu_v100 * A100_OVER_V100
    load = os.getloadavg()[0]
    n = runs["1"][0]["rows"]
    return [
        Result("distributed", "1 process (siam score defaults), after setup", best["1"], "img/s",
               note=f"{n} images, batch {BATCH}, {cores} cores, torch threads = cores, default workers; best of {rounds}"),
        Result("distributed", "1 process, 1 thread, decoding in process (one rank's setup)", best["1x1"], "img/s",
               note=f"best of {rounds}"),
        Result("distributed", "2 processes (RANK 0/1, 1 thread each), after setup", best["2"], "img/s",
               note=f"slowest rank's time; best of {rounds}"),
        Result("distributed", "2 processes / 1 process (defaults) throughput", best["2"] / best["1"], "x",
               note=f"{cores} cores; per round {', '.join(f'{x:.2f}' for x in paired)}; load {load:.1f} at the end"),
        Result("distributed", "2 processes / 1 process of 1 thread", best["2"] / best["1x1"], "x",
               note=f"per round {', '.join(f'{x:.2f}' for x in paired_1x1)}: what the second process adds"),
        Result("distributed", "2 / 1 processes (defaults), end to end (start-up and imports included)",
               e2e["2"] / e2e["1"], "x", note=f"1 process {e2e['1']:.2f} img/s, 2 processes {e2e['2']:.2f} img/s"),
        Result("distributed", "decode + eval transform per core (640x480 JPEG -> 450 px)", per_core, "img/s/core",
               note="load_image + eval_transform, one thread, best of 2"),
        Result("distributed", f"DataLoader workers to feed one V100 (assumed {gpu_v100:.0f} img/s at 450 px)",
               gpu_v100 / per_core, "workers", note="NVIDIA's 3,382 img/s at 224 px (AMP) x (224/450)^2"),
        Result("distributed", f"DataLoader workers to feed one A100 (assumed {gpu_a100:.0f} img/s at 450 px)",
               gpu_a100 / per_core, "workers", note="V100 figure x 2,470/1,200 (same README, AMP training)"),
    ]
