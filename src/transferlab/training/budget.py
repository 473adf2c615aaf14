"""Time budgets: a deadline for the whole run, epoch timing, and fitting a schedule to the time left.

``--time-budget 10m`` sets a deadline from the start of the run (feature extraction included).
Fine-tuning is planned from a measured epoch time (the first steps of the first epoch), sized
to what is left once evaluation is reserved, and cut at an epoch boundary if the estimate was
optimistic, so the run ends within the budget (+10%) whatever the machine's load.
"""

from __future__ import annotations

import logging
import math
import time

from transferlab._keras import keras
from transferlab.progress import eta_clock

logger = logging.getLogger("transferlab")

from transferlab.training.duration import parse_duration  # noqa: F401 (public here too)

__all__ = ["parse_duration", "Deadline", "EpochTimer", "BudgetPlanner", "FittedCosine", "plan_epochs"]


class Deadline:
    """The end of a time budget of ``seconds``, of which ``spent_before`` were used by an earlier
    process (a resumed run), counted from ``start`` (``time.perf_counter`` clock)."""

    def __init__(self, seconds: float, start: float | None = None, spent_before: float = 0.0):
        self.seconds, self.spent_before = float(seconds), float(spent_before)
        self.start = time.perf_counter() if start is None else start

    @property
    def at(self) -> float:
        return self.start + self.seconds - self.spent_before

    def left(self) -> float:
        """Seconds until the deadline (negative once past it)."""
        return self.at - time.perf_counter()

    def spent(self) -> float:
        """Seconds of the budget used so far, by this process and those before it."""
        return self.spent_before + time.perf_counter() - self.start

    def eta(self) -> str:
        """The deadline as a wall-clock time, e.g. ``"14:05:09"``."""
        return eta_clock(self.left())


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

    def expected(self) -> float:
        """A safe guess of the next epoch's seconds: the slowest epoch after the first (which
        includes tracing), or the first when it is the only one."""
        return max(self.seconds[1:] or self.seconds) if self.seconds else 0.0


class FittedCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay to 0 after a linear warm-up from ``base_lr / 10``, over a length that can
    change while training (:class:`BudgetPlanner` fits it to the time left).

    Args:
        base_lr: peak learning rate.
        total_steps: steps of the whole schedule (warm-up included), until :meth:`set_total_steps`.
        warmup_steps: steps of the linear warm-up (0: none).
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0):
        self.base_lr, self.warmup_steps = float(base_lr), int(warmup_steps)
        self.total_steps = keras.Variable(float(max(1, total_steps)), trainable=False, dtype="float32",
                                          name="schedule_total_steps")

    def set_total_steps(self, steps: int) -> None:
        self.total_steps.assign(float(max(1, steps)))

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        warm = float(max(1, self.warmup_steps))
        warmup_lr = self.base_lr / 10.0 + (self.base_lr - self.base_lr / 10.0) * step / warm
        progress = ops.clip((step - self.warmup_steps) / ops.maximum(1.0, self.total_steps - self.warmup_steps),
                            0.0, 1.0)
        cosine_lr = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup_lr, cosine_lr) if self.warmup_steps else cosine_lr

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": float(self.total_steps.numpy()),
                "warmup_steps": self.warmup_steps}


class BudgetPlanner(keras.callbacks.Callback):
    """Fits the number of epochs (and the schedule) to the time left, from the first steps.

    After ``probe_steps`` timed steps of the first epoch (the first ``skip_steps`` are not
    timed: they include tracing), the epoch time is estimated as steps x step time plus the
    validation pass (``val_fraction`` of an epoch's images at a third of a training step's
    cost: forward only), and ``planned_epochs`` = the whole epochs that fit before
    ``deadline - reserve_seconds``, at most ``max_epochs``. After every epoch the plan is
    revised downwards with the measured epoch time. Fewer than ``min_epochs``: training stops
    at once (``gave_up``), and the model it started from is kept.

    Args:
        planned_epochs: a plan made before (resumed run): kept, never re-estimated upwards.
        record: a dict (saved with each checkpoint) that receives ``planned_epochs``,
            ``estimated_epoch_seconds`` and, after every epoch, ``spent_seconds`` of the budget.
    """

    def __init__(self, deadline: Deadline, *, steps_per_epoch: int, max_epochs: int, reserve_seconds: float = 0.0,
                 val_fraction: float = 0.0, schedule: FittedCosine | None = None, min_epochs: int = 2,
                 probe_steps: int = 6, skip_steps: int = 2, planned_epochs: int | None = None,
                 timer: EpochTimer | None = None, record: dict | None = None):
        super().__init__()
        self.deadline, self.reserve, self.steps = deadline, reserve_seconds, steps_per_epoch
        self.max_epochs, self.min_epochs, self.val_fraction = max_epochs, min_epochs, val_fraction
        self.schedule, self.timer = schedule, timer
        self.record = record if record is not None else {}
        self.probe_steps = max(1, min(probe_steps, steps_per_epoch - skip_steps))
        self.skip_steps = skip_steps if steps_per_epoch > skip_steps + 1 else 0
        self.planned_epochs, self.estimated_epoch_seconds = planned_epochs, None
        self.gave_up = False
        self._epoch, self._probe_start, self._replanned = 0, None, planned_epochs is not None

    def _set_plan(self, epochs: int) -> None:
        self.planned_epochs = self.record["planned_epochs"] = epochs
        if self.schedule is not None and epochs:
            self.schedule.set_total_steps(epochs * self.steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.planned_epochs is not None and epoch >= self.planned_epochs:
            self.model.stop_training = True

    def on_train_batch_begin(self, batch, logs=None):
        if self._probe_start is None and batch == self.skip_steps:
            self._probe_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.planned_epochs is not None or self._probe_start is None:
            return
        if batch + 1 - self.skip_steps < self.probe_steps and batch + 1 < self.steps:
            return
        per_step = (time.perf_counter() - self._probe_start) / max(1, batch + 1 - self.skip_steps)
        estimate = per_step * self.steps * (1.0 + self.val_fraction / 3.0)
        self.estimated_epoch_seconds = self.record["estimated_epoch_seconds"] = round(estimate, 3)
        # The epoch under way counts: it started before the probe and ends after it.
        done_so_far = per_step * (batch + 1)
        left = self.deadline.left() - self.reserve + done_so_far
        fits = int(left // estimate) if estimate > 0 else self.max_epochs
        epochs = min(self.max_epochs, self._epoch + fits)
        if epochs - self._epoch < self.min_epochs:
            self.gave_up = True
            self._set_plan(self._epoch)
            self.model.stop_training = True
            logger.info("Time budget: fine-tuning needs ~%.0f s per epoch and %.0f s are left: not started.",
                        estimate, self.deadline.left())
            return
        self._set_plan(epochs)
        logger.info("Time budget: ~%.0f s per fine-tuning epoch, %d epoch(s) planned; ETA %s.", estimate, epochs,
                    eta_clock((epochs - self._epoch) * estimate - done_so_far + self.reserve))

    def _epoch_seconds(self, epoch: int) -> float:
        """The next epoch's expected seconds: the slowest whole epoch measured after the first;
        for the first, its time from the probe on (its first steps include tracing)."""
        later = self.timer.seconds[1:] if self.timer is not None else []
        if later:
            return max(later)
        if self._probe_start is not None:
            return (time.perf_counter() - self._probe_start) * self.steps / max(1, self.steps - self.skip_steps)
        return self.timer.expected() if self.timer is not None else 0.0

    def on_epoch_end(self, epoch, logs=None):
        self.record["spent_seconds"] = round(self.deadline.spent(), 3)
        if self.model.stop_training:
            return
        expected = self._epoch_seconds(epoch)
        fits = int((self.deadline.left() - self.reserve) // expected) if expected > 0 else self.max_epochs
        planned = self.planned_epochs if self.planned_epochs is not None else self.max_epochs
        revised = epoch + 1 + fits
        # The first plan rests on a few steps; once a whole steady epoch is measured (the second
        # of this process) it may grow too. After that, plans only shrink (a schedule that keeps
        # stretching would never decay).
        steady = self.timer is not None and len(self.timer.seconds) == 2 and not self._replanned
        revised = min(self.max_epochs, revised) if steady else min(planned, revised)
        if steady:
            self._replanned = True
        if revised != planned:
            logger.info("Time budget: epochs take ~%.0f s; plan revised from %d to %d epoch(s); ETA %s.", expected,
                        planned, max(revised, epoch + 1),
                        eta_clock((max(revised, epoch + 1) - epoch - 1) * expected + self.reserve))
            self._set_plan(max(revised, epoch + 1))
        if self.planned_epochs is not None and epoch + 1 >= self.planned_epochs:
            self.model.stop_training = True
