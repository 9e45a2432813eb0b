"""Progress reporting: a rich bar on a terminal, plain lines otherwise, nothing with quiet."""

from __future__ import annotations

import sys
import time


class Progress:
    """Minimal progress reporter over ``rich.progress`` (terminal) or periodic plain lines."""

    def __init__(self, total: int | None, *, desc: str, unit: str = "it", quiet: bool = False,
                 every_s: float = 10.0, initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.quiet, self.every_s = total, desc, unit, quiet, every_s
        self.count = initial
        self._initial = initial
        self._t0 = time.perf_counter()
        self._last_line = self._t0
        self._postfix = ""
        self._rich = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeRemainingColumn)

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[post]}"), transient=False)
            self._task = self._rich.add_task(desc, total=total, completed=initial, rate="", post="")
            self._rich.start()

    @property
    def rate(self) -> float:
        dt = time.perf_counter() - self._t0
        return (self.count - self._initial) / dt if dt > 0 else 0.0

    def update(self, n: int = 1, postfix: str = "") -> None:
        self.count += n
        if postfix:
            self._postfix = postfix
        if self.quiet:
            return
        rate = f"{self.rate:.2f} {self.unit}/s"
        if self._rich is not None:
            self._rich.update(self._task, completed=self.count, rate=rate, post=self._postfix)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.every_s or (self.total is not None and self.count >= self.total):
            self._last_line = now
            total = f"/{self.total}" if self.total is not None else ""
            eta = ""
            if self.total is not None and self.rate > 0 and self.count < self.total:
                eta = f", ETA {_clock((self.total - self.count) / self.rate)}"
            print(f"{self.desc}: {self.count}{total} {self.unit} ({rate}{eta}) {self._postfix}".rstrip(),
                  file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")
