"""Keras callbacks of a training run: epoch progress with live metrics and ETA, TensorBoard logs."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from transferlab._keras import keras
from transferlab.errors import MissingDependencyError
from transferlab.progress import eta_clock, format_duration, progress_bar

__all__ = ["CostEstimate", "EpochProgress", "tensorboard_callback", "TENSORBOARD_DIR"]

logger = logging.getLogger("transferlab")

TENSORBOARD_DIR = "tensorboard"
_SHOWN = (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc"))


def _format_logs(logs: dict | None) -> str:
    logs = logs or {}
    return "  ".join(f"{label} {float(logs[key]):.4f}" for key, label in _SHOWN if key in logs)


class EpochProgress(keras.callbacks.Callback):
    """One progress bar over the epochs of ``fit``: count, rate, ETA and the latest metrics.

    On a terminal a live bar (tqdm) whose postfix shows loss/accuracy/val_loss/val_accuracy (and
    the running batch loss during long epochs); otherwise one plain summary line when training
    ends; nothing with ``set_quiet(True)`` or ``enabled=False`` (see :func:`progress_bar`).
    The total is ``epochs`` (less ``initial_epoch`` when resuming): early stopping ends the bar
    before it is full.
    """

    def __init__(self, desc: str = "Training", enabled: bool = True, batch_interval_s: float = 0.5):
        super().__init__()
        self.desc, self.enabled, self.batch_interval_s = desc, enabled, batch_interval_s
        self._context = self._bar = self._first_epoch = None
        self._epoch_text = ""
        self._last_batch = 0.0

    def on_train_begin(self, logs=None):
        self._close()
        self._context = progress_bar(total=self.params.get("epochs"), desc=self.desc, unit="epoch",
                                     enabled=self.enabled)
        self._bar = self._context.__enter__()
        self._epoch_text, self._first_epoch = "", None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:  # resumed with initial_epoch: count the epochs still to run
            self._first_epoch = epoch
            if epoch and getattr(self._bar, "total", None):
                self._bar.total = max(self._bar.total - epoch, 1)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._bar is None or now - self._last_batch < self.batch_interval_s:
            return
        self._last_batch = now
        steps = self.params.get("steps")
        live = f"step {batch + 1}" + (f"/{steps}" if steps else "")
        if logs and "loss" in logs:
            live += f" loss {float(logs['loss']):.4f}"
        self._bar.set_postfix_str("  ".join(t for t in (self._epoch_text, f"[{live}]") if t))

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is None:
            return
        self._epoch_text = _format_logs(logs)
        self._bar.set_postfix_str(self._epoch_text)
        self._bar.update(1)

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._context is not None:
            context, self._context, self._bar = self._context, None, None
            context.__exit__(None, None, None)


class CostEstimate(keras.callbacks.Callback):
    """Says once, a few steps into the first epoch, what the whole phase will cost.

    The first ``skip_steps`` steps are not timed (they include tracing); the next
    ``probe_steps`` give the seconds per step, hence per epoch (plus the validation pass:
    ``val_fraction`` of the training images at a third of a training step's cost, forward only)
    and for all the epochs still planned, so a user can stop a run that would take too long.
    """

    def __init__(self, desc: str = "Fine-tuning", *, val_fraction: float = 0.0, skip_steps: int = 2,
                 probe_steps: int = 6):
        super().__init__()
        self.desc, self.val_fraction, self.skip_steps, self.probe_steps = desc, val_fraction, skip_steps, probe_steps
        self.epoch_seconds: float | None = None
        self._start: float | None = None
        self._first_epoch: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps = int(self.params.get("steps") or 0)
        skip = self.skip_steps if steps > self.skip_steps + 1 else 0
        if self._start is None and self.epoch_seconds is None and batch == skip:
            self._start, self._skip = time.perf_counter(), skip

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None or self.epoch_seconds is not None:
            return
        steps = int(self.params.get("steps") or 0)
        timed = batch + 1 - self._skip
        if timed < self.probe_steps and batch + 1 < steps:
            return
        per_step = (time.perf_counter() - self._start) / max(1, timed)
        self.epoch_seconds = per_step * steps * (1.0 + self.val_fraction / 3.0)
        epochs = int(self.params.get("epochs") or 0) - (self._first_epoch or 0)
        left = self.epoch_seconds * epochs - per_step * (batch + 1)
        logger.info("%s: about %s per epoch (measured on the first steps); up to %d epoch%s: about %s (ETA %s). "
                    "Early stopping may end it sooner; Ctrl-C keeps the last finished epoch.", self.desc,
                    format_duration(self.epoch_seconds), epochs, "" if epochs == 1 else "s",
                    format_duration(left), eta_clock(left))


def tensorboard_callback(run_dir: str | os.PathLike, **kwargs) -> keras.callbacks.TensorBoard:
    """TensorBoard logs of a run in ``RUN/tensorboard`` (view: ``tensorboard --logdir RUN/tensorboard``)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise MissingDependencyError("--tensorboard needs the tensorboard package (TensorFlow's summary writer "
                          "uses it): pip install tensorboard")
    log_dir = Path(run_dir) / TENSORBOARD_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = {"histogram_freq": 0, "write_graph": False, "update_freq": "epoch", **kwargs}
    return keras.callbacks.TensorBoard(log_dir=str(log_dir), **settings)
