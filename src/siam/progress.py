"""Progress for long loops: a live bar on a terminal, plain lines in logs.

A live bar redraws itself with carriage returns, which a terminal overwrites in place but a log
file (CI, ``nohup``, ``> run.log``, the quickstart's child logs) keeps, thousands of them. The
rule used by every long loop in siam (``siam train``, ``siam quickstart``, ``siam synth``,
``siam score``): when both stdout and stderr are terminals (:func:`interactive`), show the bar;
otherwise print one plain line now and then (:class:`LineProgress`), never a ``\\r``.

    progress(total=N, desc="siam score", unit="img", enabled=True)  # tqdm bar | LineProgress | no-op

Training uses the same rule through :class:`siam.training.callbacks.EpochLines`, a Lightning
callback that prints one line per epoch (and one at least every ``interval_s`` seconds within a
long epoch).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO
__all__ = ["interactive", "progress", "LineProgress", "LINE_INTERVAL_S"]

#: Seconds between two plain progress lines within a long run (the last line always prints).
LINE_INTERVAL_S = 30.0


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def interactive() -> bool:
    """Whether a live progress bar is wanted: both stdout and stderr are terminals."""
    return _is_tty(sys.stdout) and _is_tty(sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class LineProgress:
    """A progress counter that prints plain lines (no ``\\r``) to ``file`` (default stderr).

    Prints ``desc: done/total unit (pct%), elapsed, rate, eta`` when at least ``interval_s``
    seconds have passed since the last line, and once more on :meth:`close` if anything changed.
    The subset of the tqdm interface siam uses: ``update(n)``, ``close()``, context manager.
    """

    def __init__(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 interval_s: float = LINE_INTERVAL_S, file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = initial
        self.interval_s = interval_s
        self.file = file
        self._t0 = self._last = time.monotonic()
        self._printed = initial
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval_s:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        elapsed = now - self._t0
        done = self.n - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
            eta = (self.total - self.n) / rate if rate > 0 else None
        else:
            text += f" {self.unit}"
            eta = None
        text += f", {_duration(elapsed)} elapsed, {rate:.3g} {self.unit}/s"
        if eta is not None and self.n < self.total:  # type: ignore[operator]
            text += f", ~{_duration(eta)} left"
        print(text, file=self.file if self.file is not None else sys.stderr, flush=True)
        self._last, self._printed = now, self.n

    def close(self) -> None:
        if not self._closed and self.n != self._printed:
            self._line()
        self._closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent:
    """No output (progress turned off)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(*, total: int | None, desc: str, unit: str = "it", enabled: bool | None = True,
             initial: int = 0, interval_s: float = LINE_INTERVAL_S, **tqdm_kwargs: Any) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise, nothing when ``enabled`` is False.

    ``enabled=None`` means the same as True (kept for callers that pass tqdm's "auto")."""
    if enabled is False:
        return _Silent()
    if interactive():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, **tqdm_kwargs)
    return LineProgress(total=total, desc=desc, unit=unit, initial=initial, interval_s=interval_s)
