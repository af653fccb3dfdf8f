"""Bounded load test of ``siam serve`` on loopback: latency percentiles, not asserted.

A real uvicorn server runs the app in a background thread on 127.0.0.1 (a free port); client
threads (stdlib ``http.client``, one keep-alive connection each) POST a 640x480 photo to
``/v1/explain``. Reported: status counts (503 is the deliberate concurrency limit; any other 5xx
makes the run fail), p50/p95/p99 latency of the answered requests, throughput, ``/health``
latency measured *during* the load (the event loop must stay responsive while the model works in
the threadpool), and the p50 ratio against a baseline measured in the same run: the same
explanation (decode + ``siam.explain`` + overlays) called in-process, without HTTP.

Two phases, each on a fresh server: *capacity* (server limit = client concurrency, so every
request is answered) and *overload* (limit = half of it: the excess gets 503 + Retry-After at once).

    python -m benchmarks.serve_load                      # 200 requests/phase, 8 concurrent, tiny model
    python -m benchmarks.serve_load --requests 40 --checkpoint m.safetensors
"""

from __future__ import annotations

import argparse
import http.client
import io
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.common import PHOTOS, Result, environment, randomise_heads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _photo() -> bytes:
    """One shared photo as a 640x480 JPEG (a synthetic gradient when ../shared is missing)."""
    from PIL import Image

    src = PHOTOS / "bythewater.jpg"
    if src.is_file():
        with Image.open(src) as im:
            image = im.convert("RGB").resize((640, 480), Image.Resampling.LANCZOS)
    else:
        image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="load.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _tiny_checkpoint(folder: Path) -> Path:
    import siam
    from siam.data.transforms import Preprocessing

    model = siam.build_model(backbone="tiny", grid=8, border=0, preprocessing=Preprocessing(resize=144, crop=128))
    return siam.save_checkpoint(randomise_heads(model), folder / "tiny.safetensors")


class _Server:
    """uvicorn in a daemon thread on 127.0.0.1; ``stop()`` shuts it down."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the benchmark server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _load(
    port: int, body: bytes, media: str, *, requests: int, concurrency: int
) -> tuple[dict[int, int], list[float], float, int]:
    """-> (status counts, latencies in s of the 200 answers, wall time in s, 503s lacking Retry-After)."""
    counter = iter(range(requests))
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    no_retry_after = 0

    def worker() -> None:
        nonlocal no_retry_after
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            start = time.perf_counter()
            retry_after = None
            try:
                conn.request("POST", "/v1/explain", body=body, headers={"Content-Type": media})
                resp = conn.getresponse()
                resp.read()
                status, retry_after = resp.status, resp.getheader("retry-after")
                if (resp.getheader("connection") or "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                status = -1  # connection error
            elapsed = time.perf_counter() - start
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed)
                if status == 503 and not retry_after:
                    no_retry_after += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, latencies, time.perf_counter() - start, no_retry_after


def _health_probe(port: int, stop: threading.Event, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        start = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        out.append(time.perf_counter() - start)
        time.sleep(0.05)
    conn.close()


def _phase(
    label: str, ckpt: Path, photo: bytes, *, requests: int, concurrency: int, limit: int, baseline: bool
) -> list[Result]:
    """One load run against a fresh server whose concurrency limit is ``limit``."""
    from siam.serve.app import create_app

    body, media = _multipart(photo)
    app = create_app(ckpt, max_concurrency=limit)
    results: list[Result] = []
    if baseline:  # the same work in-process (decode + explain + overlays), no HTTP, same run
        service, direct = app.state.service, []
        for _ in range(7):
            start = time.perf_counter()
            service.explain_json(photo, "load.jpg", None)
            direct.append(time.perf_counter() - start)
        direct_p50 = statistics.median(direct[2:])
        print(f"[{label}] direct in-process explain p50: {1e3 * direct_p50:.1f} ms")
    with _Server(app) as server:
        stop, health = threading.Event(), []
        probe = threading.Thread(target=_health_probe, args=(server.port, stop, health), daemon=True)
        probe.start()
        statuses, lat, wall, no_retry = _load(server.port, body, media, requests=requests, concurrency=concurrency)
        stop.set()
        probe.join(timeout=30)
    bad = sum(c for s, c in statuses.items() if (s >= 500 and s != 503) or s < 0)
    ok = statuses.get(200, 0)
    print(f"[{label}] {requests} requests at {concurrency} concurrent, server limit {limit}: "
          f"statuses {dict(sorted(statuses.items()))}, wall {wall:.1f} s")
    if lat:
        print(f"[{label}] latency of 200s (ms): p50 {1e3 * _percentile(lat, 50):.0f}  "
              f"p95 {1e3 * _percentile(lat, 95):.0f}  p99 {1e3 * _percentile(lat, 99):.0f}  max {1e3 * max(lat):.0f}")
    if health:
        print(f"[{label}] /health during load (ms): p50 {1e3 * _percentile(health, 50):.1f}  "
              f"p95 {1e3 * _percentile(health, 95):.1f}")
    results.append(Result("serve", f"{label}: 200 / 503", ok, "answered",
                          note=f"503 (deliberate limit): {statuses.get(503, 0)} of {requests}"))
    results.append(Result("serve", f"{label}: other 5xx, connection errors, 503 without Retry-After",
                          bad + no_retry, "requests", goal="0", passed=bad + no_retry == 0))
    if lat:
        results.append(Result("serve", f"{label}: p95 latency", 1e3 * _percentile(lat, 95), "ms",
                              note=f"throughput {ok / wall:.2f} req/s"))
        if baseline:
            results.append(Result("serve", f"{label}: p50 HTTP / p50 direct explain",
                                  _percentile(lat, 50) / direct_p50, "x",
                                  note=f"direct p50 {1e3 * direct_p50:.0f} ms; >1 is queueing + HTTP"))
    if health:
        results.append(Result("serve", f"{label}: /health p95 during load", 1e3 * _percentile(health, 95), "ms"))
    return results


def run(
    quick: bool = False, *, requests: int | None = None, concurrency: int = 8, checkpoint: str | None = None
) -> list[Result]:
    """Two phases: *capacity* (server limit = client concurrency: every request is answered) and
    *overload* (server limit = half of it: the excess gets 503 + Retry-After at once)."""
    n = requests or (40 if quick else 200)
    photo = _photo()
    with tempfile.TemporaryDirectory(prefix="siam-serve-load-") as tmp:
        ckpt = Path(checkpoint) if checkpoint else _tiny_checkpoint(Path(tmp))
        print(f"model: {checkpoint or 'tiny backbone, random heads'}; photo 640x480 JPEG, {len(photo)} bytes")
        results = _phase("capacity", ckpt, photo, requests=n, concurrency=concurrency, limit=concurrency,
                         baseline=True)
        results += _phase("overload", ckpt, photo, requests=n, concurrency=concurrency,
                          limit=max(1, concurrency // 2), baseline=False)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="total POST /v1/explain requests")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--checkpoint", default=None, help="SIAM model file (default: a tiny random model)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    env = environment()
    print(f"cpu: {env['cpu']} x{env['cores']}, torch {env['torch']} ({env['torch_threads']} threads), "
          f"load average {env['load_average']}")
    results = run(requests=args.requests, concurrency=args.concurrency, checkpoint=args.checkpoint)
    for r in results:
        print(r.row())
    return 0 if all(r.passed is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
