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


class _PlainProgress:
    """Counts silently and prints one summary line when the stage ends (logs, CI, pipes)."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self._start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        elapsed = time.perf_counter() - self._start
        rate = self.n / elapsed if elapsed > 0 else float("inf")
        extra = f", {self.postfix}" if getattr(self, "postfix", "") else ""
        print(f"{self.desc}: {self.n} {self.unit} in {elapsed:.1f} s ({rate:.1f} {self.unit}/s){extra}",
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
