"""Time budgets: a deadline for the whole run, epoch timing, and fitting a schedule to the time left.

``--time-budget 10m`` sets a deadline from the start of the run (feature extraction included).
Fine-tuning is planned from a measured epoch time (the first steps of the first epoch), sized
to what is left once evaluation is reserved, and cut at an epoch boundary if the estimate was
optimistic, so the run ends within the budget (+10%) whatever the machine's load.
"""

from __future__ import annotations

import logging
import math
import re
import time

import keras

logger = logging.getLogger("transferlab")

__all__ = ["parse_duration", "Deadline", "EpochTimer", "BudgetStop", "plan_epochs"]


def parse_duration(text: "str | float | int") -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"1.5h"`` or ``"1h30m"`` (a number is seconds).

    Raises:
        ValueError: naming the text and the accepted forms.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*",
                             str(text).lower())
        if not parts or not any(parts.groups()):
            raise ValueError(f"Time budget {text!r} is not a duration: use e.g. 600, 90s, 15m, 1.5h or 1h30m.")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not seconds > 0:
        raise ValueError(f"Time budget {text!r} must be more than 0 seconds.")
    return seconds


class Deadline:
    """A point in time (``time.perf_counter`` clock) ``seconds`` after ``start``."""

    def __init__(self, seconds: float, start: float | None = None):
        self.seconds = float(seconds)
        self.start = time.perf_counter() if start is None else start

    @property
    def at(self) -> float:
        return self.start + self.seconds

    def left(self) -> float:
        """Seconds until the deadline (negative once past it)."""
        return self.at - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def plan_epochs(seconds_left: float, epoch_seconds: float, *, minimum: int = 2, maximum: int = 30) -> int:
    """Whole epochs of ``epoch_seconds`` that fit in ``seconds_left`` (0 when fewer than ``minimum``)."""
    if epoch_seconds <= 0:
        return maximum
    fits = int(math.floor(seconds_left / epoch_seconds))
    return min(maximum, fits) if fits >= minimum else 0


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training and validation of that epoch) to the logs of every epoch."""

    def __init__(self):
        super().__init__()
        self._began = 0.0
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._began
        self.seconds.append(seconds)
        if logs is not None:
            logs["epoch_seconds"] = seconds


class BudgetStop(keras.callbacks.Callback):
    """Stop at an epoch boundary when the next epoch would end after ``deadline`` less ``reserve``.

    The next epoch is assumed to take as long as the slowest epoch so far (machines that
    others share slow down unpredictably; the slowest is the safe guess).
    """

    def __init__(self, deadline: Deadline, reserve_seconds: float = 0.0, timer: EpochTimer | None = None):
        super().__init__()
        self.deadline, self.reserve = deadline, reserve_seconds
        self.timer = timer or EpochTimer()
        self.stopped_for_time = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.timer.seconds:
            return
        if self.deadline.left() - self.reserve < max(self.timer.seconds):
            self.stopped_for_time = True
            self.model.stop_training = True
            logger.info("Time budget: stopping after epoch %d (%.0f s left, an epoch takes ~%.0f s).", epoch + 1,
                        self.deadline.left(), max(self.timer.seconds))
