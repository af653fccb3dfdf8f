"""Shared helpers: environment description, timing, result records, the 640x480 photo set."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "images" / "photos"
PHOTO_SIZE = (640, 480)  # the typical ScenicOrNot / Geograph size


@dataclass
class Result:
    """One figure: ``value`` in ``unit``; ``goal`` is a human-readable target ('>= 10'), if any."""

    bench: str
    name: str
    value: float
    unit: str = "x"
    goal: str | None = None
    passed: bool | None = None
    note: str = ""

    def row(self) -> str:
        mark = {True: "yes", False: "**no**", None: ""}[self.passed]
        value = f"{self.value:.3g}" if abs(self.value) < 1000 else f"{self.value:.0f}"
        return f"| {self.bench} | {self.name} | {value} {self.unit} | {self.goal or ''} | {mark} | {self.note} |"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def at_least(value: float, goal: float) -> tuple[str, bool]:
    return f">= {goal:g}", value >= goal


def at_most(value: float, goal: float) -> tuple[str, bool]:
    return f"<= {goal:g}", value <= goal


def best_time(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> float:
    """The fastest of ``repeats`` wall-clock runs of ``fn`` after ``warmup`` untimed runs (s)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Times:
    """Best time (s) per function: ``wall`` clock and this process's ``cpu`` time (all threads).

    CPU time hardly changes when other processes load the machine, so its ratios are a check on
    wall-clock ratios measured on a busy machine (it does not count DataLoader worker processes).
    """

    wall: dict[str, float]
    cpu: dict[str, float]
    runs: dict[str, list[float]] = field(default_factory=dict)  # every timed wall-clock run, in order

    def paired_ratio(self, a: str, b: str) -> float:
        """Median over the rounds of ``a``'s time / ``b``'s time in the same round: the two ran back
        to back, so a change in machine load between rounds cancels (a ratio of bests does not)."""
        return statistics.median(x / y for x, y in zip(self.runs[a], self.runs[b]))


def interleaved_best(fns: dict[str, Callable[[], Any]], *, repeats: int = 3, warmup: int = 1) -> Times:
    """Best times of each function, timing them in turn (a, b, a, b, ...) so that a change in
    machine load affects all of them alike; ratios of the results are what we report."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall = {name: float("inf") for name in fns}
    cpu = dict(wall)
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs[name].append(time.perf_counter() - w0)
            wall[name] = min(wall[name], runs[name][-1])
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return Times(wall, cpu, runs)


def environment() -> dict[str, Any]:
    """Machine, threads and versions to print with every figure."""
    import numpy
    import PIL
    import torch
    import torchvision

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from siam.scoring.inference import bf16_is_native

    env = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native_cpu": bf16_is_native(torch.device("cpu")),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("scikit-image", "grad-cam", "pyarrow", "onnxruntime"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = None
    return env


class PhotoSet:
    """The shared photos resized to 640x480 JPEGs in a temporary folder (context manager)."""

    def __init__(self, copies: int = 1, quality: int = 90) -> None:
        self.copies, self.quality = copies, quality
        self.dir: Path | None = None

    def __enter__(self) -> list[Path]:
        from PIL import Image

        if not PHOTOS.is_dir():
            raise SystemExit(f"benchmarks need the shared photos at {PHOTOS}")
        self.dir = Path(tempfile.mkdtemp(prefix="siam-bench-"))
        paths = []
        for src in sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            with Image.open(src) as im:
                im.draft("RGB", (PHOTO_SIZE[0] * 2, PHOTO_SIZE[1] * 2))
                small = im.convert("RGB").resize(PHOTO_SIZE, Image.Resampling.LANCZOS)
            for k in range(self.copies):
                dest = self.dir / f"{src.stem}_{k}.jpg"
                small.save(dest, "JPEG", quality=self.quality)
                paths.append(dest)
        return paths

    def __exit__(self, *exc: object) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def randomise_heads(model: Any, seed: int = 0) -> Any:
    """Give SIAM's template head non-trivial values (so scores and contributions vary)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.template_head
        head.templates.copy_(torch.rand(head.templates.shape, generator=gen) * 0.02)
        head.mixing.copy_(torch.rand(head.mixing.shape, generator=gen) * 2 - 1)
    return model
