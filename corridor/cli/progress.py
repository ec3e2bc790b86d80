"""Progress of long commands (run, check, bench, capture) on stderr.

Stage: CLI (prints). On a terminal, one status line redrawn in place with
carriage returns: a bar, the count, and the time left where the work is
counted, the elapsed time where it is not. Anywhere else (a pipe, a log file,
a test) the plain line-per-event log, word for word the line the caller gives,
so scripts and docs that read it keep working.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

import click

BAR_WIDTH = 24
_SPINNER = "|/-\\"


def format_clock(seconds: float) -> str:
    """``M:SS`` (``H:MM:SS`` from an hour)."""
    total = max(int(round(seconds)), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """Progress on ``stream`` (default stderr): a live line on a TTY, whole lines otherwise.

    ``step`` reports counted work (``done`` of ``total``), ``event`` uncounted work; both take the
    ``plain`` line written as is when the stream is not a terminal. Call ``close`` (or use ``with``)
    before printing anything else to the stream.
    """

    def __init__(self, stream: TextIO | None = None, *, width: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty()) if callable(isatty) else False
        self._width = width
        self._clock = clock
        self._started = clock()
        self._events = 0
        self._drawn = 0  # characters on the live line now

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def step(self, plain: str, *, done: int, total: int, eta_s: float | None = None, message: str = "") -> None:
        if not self.live:
            click.echo(plain, file=self.stream)
            return
        elapsed = self._clock() - self._started
        if eta_s is None and 0 < done < total:
            eta_s = elapsed / done * (total - done)  # the runner gave none: the pace so far
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        filled = int(round(fraction * BAR_WIDTH))
        eta = "ETA done" if total and done >= total else f"ETA {format_clock(eta_s)}" if eta_s is not None \
            else "ETA --:--"
        self._draw(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {fraction:4.0%} {eta}  {message}")

    def event(self, plain: str, *, message: str | None = None) -> None:
        if not self.live:
            click.echo(plain, file=self.stream)
            return
        spin = _SPINNER[self._events % len(_SPINNER)]
        self._events += 1
        self._draw(f"{spin} {format_clock(self._clock() - self._started)} elapsed  {message or plain}")

    def close(self) -> None:
        """End the live line (it stays on screen); nothing to do when not on a TTY."""
        if self.live and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _draw(self, text: str) -> None:
        width = self._width or shutil.get_terminal_size((80, 24)).columns
        text = text.replace("\n", " ")[: max(width - 1, 10)]
        # pad over what the previous, longer line left behind
        self.stream.write("\r" + text + " " * max(self._drawn - len(text), 0))
        self.stream.flush()
        self._drawn = len(text)


__all__ = ["ProgressLine", "format_clock"]
