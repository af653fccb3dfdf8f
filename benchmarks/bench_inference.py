"""(3) Inference: ResNet-50 SIAM at 450 px.

* achieved GFLOP/s (FLOPs from ``torch.utils.flop_counter``) of float32 channels_last as a fraction
  of this machine's measured peak float32 matmul GFLOP/s (goal >= 0.8);
* the default path (:func:`siam.scoring.prepare_for_inference`, ``precision="auto"``: bf16 autocast
  + channels_last where bf16 is native, else float32 channels_last) vs naive float32 NCHW
  (goal >= 2.3x), and its maps' relative error vs float32 (goal <= 2%); forced bf16 is reported
  too (emulated, hence slow, on CPUs without AVX512-BF16/AMX);
* peak RSS at batch 1 in a fresh subprocess (goal <= 1 GiB), with the RSS of ``import torch`` alone.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time

import torch

from benchmarks.common import Result, at_least, at_most, interleaved_best, randomise_heads

SIZE = 450


def model_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return float(counter.get_total_flops())


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def run(quick: bool = False) -> list[Result]:
    import siam
    from siam.scoring.inference import prepare_for_inference, resolve_precision

    torch.manual_seed(0)
    naive = randomise_heads(siam.build_model(backbone="resnet50")).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    reps = 2 if quick else 3
    flops = model_flops(naive, x)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    fp32_cl, _ = prepare_for_inference(copy.deepcopy(naive), "fp32", device="cpu")
    default_precision = resolve_precision("auto", "cpu")
    default, ctx = prepare_for_inference(copy.deepcopy(naive), "auto", device="cpu")
    fns = {"naive": lambda: naive(x), "cl": lambda: fp32_cl(x), "matmul": lambda: torch.mm(a, b)}
    if default_precision != "fp32":
        fns["default"] = lambda: default(x)
    with torch.inference_mode(), ctx:
        times = interleaved_best(fns, repeats=reps)
        reference = naive(x)
        default_out = default(x)
    t_naive, t_cl = times.wall["naive"], times.wall["cl"]
    peak = 2 * n**3 / times.wall["matmul"] / 1e9  # measured peak fp32 matmul, interleaved with the forwards
    t_default = times.wall.get("default", t_cl)
    c = times.cpu
    cpu_fraction = (flops / c["cl"]) / (2 * n**3 / c["matmul"])
    cpu_speedup = c["naive"] / c.get("default", c["cl"])
    out = [
        Result("inference", "network cost", flops / 1e9, "GFLOP/img", note=f"{SIZE} px, flop_counter"),
        Result("inference", "peak fp32 matmul (2048^3)", peak, "GFLOP/s"),
        Result("inference", "naive fp32 NCHW", t_naive, "s/img"),
        Result("inference", "fp32 channels_last", t_cl, "s/img"),
    ]
    achieved = flops / t_cl / 1e9
    goal, ok = at_least(achieved / peak, 0.8)
    out.append(Result("inference", "fp32 channels_last achieved / peak matmul", achieved / peak, "", goal, ok,
                      note=f"{achieved:.0f} of {peak:.0f} GFLOP/s; CPU-time fraction {cpu_fraction:.2f}"))
    goal, ok = at_least(t_naive / t_default, 2.3)
    out.append(Result("inference", f"default path ({default_precision}) speed-up vs naive fp32 NCHW",
                      t_naive / t_default, "x", goal, ok, note=f"CPU-time ratio {cpu_speedup:.2f}"))
    goal, ok = at_most(100 * relative_error(default_out.maps, reference.maps), 2.0)
    out.append(Result("inference", f"default path ({default_precision}) maps error vs fp32",
                      100 * relative_error(default_out.maps, reference.maps), "%", goal, ok))
    if default_precision != "bf16":  # show what bf16 would cost here, and its accuracy
        forced, _ = prepare_for_inference(copy.deepcopy(naive), "bf16", device="cpu")
        with torch.inference_mode():
            start = time.perf_counter()
            bf16_out = forced(x)  # one run: emulated bf16 is slow
            t_bf16 = time.perf_counter() - start
        out.append(Result("inference", "forced bf16 speed-up vs naive fp32 (not native here)",
                          t_naive / t_bf16, "x", note="emulated bf16: why auto picks fp32 on this CPU"))
        error = 100 * relative_error(bf16_out.maps, reference.maps)
        goal, ok = at_most(error, 2.0)
        out.append(Result("inference", "forced bf16 maps error vs fp32", error, "%", goal, ok))
    rss = _peak_rss_subprocess()
    goal, ok = at_most(rss["peak_mib"] / 1024, 1.0)
    out.append(Result("inference", "peak RSS, batch 1, default path (subprocess)", rss["peak_mib"] / 1024, "GiB",
                      goal, ok, note=f"`import torch` alone: {rss['import_torch_mib'] / 1024:.2f} GiB "
                      f"({rss['import_torch_file_mib'] / 1024:.2f} GiB of it shared-library pages)"))
    return out


_RSS_CHILD = r"""
import json
def status():  # VmHWM is per process image (ru_maxrss would include the parent's RSS before exec)
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "RssFile")}
import torch
after_import = status()
import siam
from siam.scoring.inference import prepare_for_inference
model, ctx = prepare_for_inference(siam.build_model(backbone="resnet50"), "auto", device="cpu")
with torch.inference_mode(), ctx:
    model(torch.randn(1, 3, 450, 450))
print(json.dumps({"peak_mib": status()["VmHWM"], "import_torch_mib": after_import["VmHWM"],
                  "import_torch_file_mib": after_import["RssFile"]}))
"""


def _peak_rss_subprocess() -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
