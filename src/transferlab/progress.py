"""Progress bars with counts, rate and ETA; one plain line per stage when not on a terminal.

Every long stage (checking images, extracting features, predicting over folders, exporting)
goes through :func:`progress_bar`, so ``--quiet`` and non-terminal output behave the same
everywhere.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (True) or restore (False) all progress output of this process."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


# A stage still running after this many seconds prints one line with its measured rate and ETA.
ESTIMATE_AFTER_S = 10.0


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 epoch"``, ``"33 epochs"``, ``"2 copies"`` (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def format_rate(count: int, seconds: float, unit: str) -> str:
    """``"12.3 img/s"``, or ``"6.5 s/format"`` when fewer than one per second (no "0.1 formats/s")."""
    if seconds <= 0 or count <= 0:
        return f"{count} {unit}"
    rate = count / seconds
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"{seconds / count:.1f} s/{unit.removesuffix('s')}"


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def eta_clock(seconds_left: float) -> str:
    """The wall-clock time ``seconds_left`` from now, e.g. ``"14:05:09"``."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() + max(0.0, seconds_left)))


class _PlainProgress:
    """Counts quietly, prints one line with the measured rate and ETA once the stage has run
    :data:`ESTIMATE_AFTER_S`, and one summary line when it ends (logs, CI, pipes)."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self._start = time.perf_counter()
        self._estimated = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._estimated or not self.total or not self.n or self.n >= self.total:
            return
        elapsed = time.perf_counter() - self._start
        if elapsed >= ESTIMATE_AFTER_S:
            self._estimated = True
            left = elapsed / self.n * (self.total - self.n)
            print(f"{self.desc}: {self.n}/{self.total} {self.unit} at {format_rate(self.n, elapsed, self.unit)}: "
                  f"about {format_duration(left)} left (ETA {eta_clock(left)})", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        elapsed = time.perf_counter() - self._start
        extra = f", {self.postfix}" if getattr(self, "postfix", "") else ""
        # Abbreviated units ("img", "it") and plural ones stay as they are; "epoch" counts as words do.
        count = f"{self.n} {self.unit}" if self.unit in ("img", "it") or self.unit.endswith("s") \
            else plural(self.n, self.unit)
        print(f"{self.desc}: {count} in {elapsed:.1f} s ({format_rate(self.n, elapsed, self.unit)}){extra}",
              file=sys.stderr, flush=True)


class _NoProgress:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> Iterator:
    """Yield an object with ``update(n)`` and ``set_postfix_str(s)``; closes on exit."""
    if not enabled or _QUIET:
        bar = _NoProgress()
    elif sys.stderr.isatty():
        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)
    else:
        bar = _PlainProgress(total, desc, unit)
    try:
        yield bar
    finally:
        bar.close()
