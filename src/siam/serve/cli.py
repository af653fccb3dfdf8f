"""``siam serve --checkpoint C [--host 127.0.0.1] [--port 8000]``: the web explorer and REST API.

Binds to the loopback address unless ``--host`` says otherwise. The model is loaded once, before
the server starts, so a bad checkpoint is reported as one line (exit 2) instead of a server that
answers 500.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable

from siam.serve.limits import format_bytes

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {v}")
        return v

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``siam serve``."""
    from siam.serve.app import (
        DEFAULT_MAX_CONCURRENCY,
        DEFAULT_MAX_MEGAPIXELS,
        DEFAULT_MAX_UPLOAD_BYTES,
        DEFAULT_TOP_K,
    )

    parser.add_argument("--checkpoint", required=True, help="SIAM model file (.safetensors or .ckpt) or the folder 'siam train --out' wrote")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=_int_in(0, 65535), default=DEFAULT_PORT, help="TCP port (default %(default)s)")
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_float,
        default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
        help=f"request body limit in MiB (default {format_bytes(DEFAULT_MAX_UPLOAD_BYTES)}); larger uploads get 413",
    )
    parser.add_argument(
        "--max-megapixels",
        type=_positive_float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="images with more pixels get 413 before decoding (default %(default)s)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=_int_in(1, 1024),
        default=DEFAULT_MAX_CONCURRENCY,
        help="explanations computed at once; more get 503 with Retry-After (default %(default)s)",
    )
    parser.add_argument(
        "--top-k", type=_int_in(0, 10_000), default=DEFAULT_TOP_K,
        help="top positive / negative attributes listed by default (default %(default)s)",
    )
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="info", help="server log level")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted. Returns the exit code."""
    import uvicorn

    from siam.serve.app import create_app

    app = create_app(
        args.checkpoint,
        max_upload_bytes=max(1, int(args.max_upload_mb * 2**20)),
        max_concurrency=args.max_concurrency,
        max_megapixels=args.max_megapixels,
        top_k=args.top_k,
    )
    if not _is_loopback(args.host):
        print(
            f"siam serve: warning: binding to {args.host}, reachable from other machines; the "
            "service has no authentication",
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"siam serve: explorer at http://{shown}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
    )
    return 0
