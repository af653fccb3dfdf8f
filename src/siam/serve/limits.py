"""Request limits enforced below the web framework.

* :class:`UploadLimitMiddleware`: a pure ASGI middleware that caps the request body. It rejects
  a declared ``Content-Length`` above the limit without reading the body, and it counts the bytes
  actually received, so a missing (chunked) or lying ``Content-Length`` is caught too: reading
  stops at the first chunk past the limit and the client gets ``413``.
* :class:`Slots`: a non-blocking concurrency limit for model work (``503`` + ``Retry-After``).
"""

from __future__ import annotations

import json
import threading

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["UploadLimitMiddleware", "Slots", "format_bytes"]


def format_bytes(n: int) -> str:
    """``20971520`` -> ``"20 MiB"`` (binary units, as the limits are configured)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class _BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` once the body passes the limit."""


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The unread rest of the body makes the connection unusable: close it.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UploadLimitMiddleware:
    """Answer ``413`` to any HTTP request whose body is larger than ``max_bytes``.

    The check happens twice: on the declared ``Content-Length`` (before anything is read) and on
    the bytes streamed through ``receive``. When the streamed count passes the limit, ``receive``
    raises inside the app, whatever response the app then tries to send is dropped, and the
    middleware sends the ``413`` itself (if no response has started yet).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self, received: str) -> str:
        return (
            f"upload too large: {received}; the limit is {format_bytes(self.max_bytes)} "
            f"({self.max_bytes} bytes)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0].decode("latin-1").strip())
                if length < 0 or len(declared) > 1:
                    raise ValueError
            except ValueError:
                await _send_error(send, 400, f"invalid Content-Length header {declared!r}")
                return
            if length > self.max_bytes:
                await _send_error(send, 413, self._detail(f"Content-Length is {length} bytes"))
                return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's own error page for the aborted read; ours replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _send_error(
                send, 413, self._detail(f"more than {received} bytes were streamed (reading stopped)")
            )


class Slots:
    """A non-blocking counting semaphore: ``try_acquire()`` never waits.

    Thread-safe and independent of any event loop, so one instance serves every request.
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {n!r}")
        self.size = n
        self._sem = threading.BoundedSemaphore(n)

    def try_acquire(self) -> bool:
        return self._sem.acquire(blocking=False)

    def release(self) -> None:
        self._sem.release()
