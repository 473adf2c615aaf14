"""Nothing lost when interrupted: per-epoch checkpoints, resume, and a clean Ctrl-C.

After every epoch (at most every few seconds for the head, whose epochs take milliseconds, and
always after the last one) ``RUN/checkpoint/`` holds:

* ``state.npz``: weights and optimizer state of the model being trained (NumPy arrays in
  ``model.get_weights()`` / ``optimizer.variables`` order: the model is rebuilt from the run's
  config on resume, so no code is loaded from the checkpoint, and saving takes milliseconds);
* ``best.npz``: the best weights so far (what early stopping restores);
* ``head.npz``: the finished head of phase 1, once phase 1 is complete;
* ``state.json``: phase ("head" or "fine-tune"), epochs completed, the history so far, the
  early-stopping and reduce-on-plateau counters, and the seed. Data order and augmentation of
  epoch k derive from (seed, k) alone (see ``make_image_dataset(epochs=...)``), so that is all
  the random state a resumed run needs.

Every file is written to a temporary name and renamed, so a killed process leaves the previous
checkpoint intact. Ctrl-C stops at the end of the current batch, keeps the last epoch's
checkpoint, and :class:`TrainingInterrupted` tells the user how to resume; a second Ctrl-C
aborts at once.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from transferlab._atomic import atomic_write, atomic_write_bytes
from transferlab._keras import keras
from transferlab.errors import ConfigError, TrainingInterrupted  # noqa: F401 (re-exported)
from transferlab.rundir import CHECKPOINT_DIR

logger = logging.getLogger("transferlab")


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write, sync=True)


def save_weights(model: keras.Model | list[np.ndarray], path: Path) -> None:
    """Weights only (``model.get_weights()`` order, or that list itself), written atomically."""
    weights = model if isinstance(model, list) else model.get_weights()
    _savez(path, {f"w{i}": w for i, w in enumerate(weights)})


def load_weights(model: keras.Model, path: Path) -> None:
    with np.load(path) as data:
        model.set_weights([data[f"w{i}"] for i in range(len(model.get_weights()))])


def save_training_state(model: keras.Model, path: Path) -> None:
    """Weights plus optimizer variables (moments, iteration count), written atomically."""
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    _savez(path, arrays)


def load_training_state(model: keras.Model, path: Path) -> None:
    """Restore :func:`save_training_state` into a model rebuilt and compiled the same way."""
    load_weights(model, path)
    with np.load(path) as data:
        count = sum(1 for k in data.files if k.startswith("o"))
        if count:
            model.optimizer.build(model.trainable_variables)
            variables = model.optimizer.variables
            if len(variables) != count:
                raise ConfigError(f"Checkpoint {path} does not match this model's optimizer "
                                 f"({count} saved variables, {len(variables)} now): was the config changed?")
            for i, variable in enumerate(variables):
                variable.assign(data[f"o{i}"])


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, default=float).encode("utf-8"), sync=True)


def read_state(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_DIR / "state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on val_loss whose counters and best weights survive a restart."""

    def __init__(self, run_dir: Path, patience: int, state: dict | None = None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.best_path = Path(run_dir) / CHECKPOINT_DIR / "best.npz"
        self._resume_state = state
        self._unsaved_best = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait = int(self._resume_state["wait"])
            best = self._resume_state["best"]
            self.best = None if best is None else float(best)
            self.best_epoch = int(self._resume_state["best_epoch"])
            if self.best_path.exists():
                with np.load(self.best_path) as data:
                    self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return  # interrupted mid-epoch: its numbers are not an epoch's
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before:
            self._unsaved_best = True

    def persist_best(self) -> None:
        """Write the weights early stopping would restore, if they changed since the last call.

        Called by :class:`EpochCheckpoint` with each checkpoint, so ``best.npz`` always matches
        the counters in ``state.json``.
        """
        if self._unsaved_best and self.best_weights is not None:
            save_weights(self.best_weights, self.best_path)
            self._unsaved_best = False

    def seed_baseline(self, model: keras.Model, value: float) -> None:
        """Count ``model``'s current weights as the best so far, at monitored value ``value``.

        Fine-tuning uses it so that the result is only kept if it beats the model it started from.
        """
        save_weights(model, self.best_path)
        self._resume_state = {"wait": 0, "best": float(value), "best_epoch": -1}

    @property
    def kept_baseline(self) -> bool:
        """True when no epoch beat the seeded baseline (its weights are what gets restored)."""
        return self.best_epoch == -1

    def state(self) -> dict:
        return {"wait": self.wait, "best": None if self.best is None else float(self.best),
                "best_epoch": self.best_epoch}


class EpochCheckpoint(keras.callbacks.Callback):
    """Write model, optimizer, counters and history after every epoch; stop cleanly on request.

    ``min_interval_s`` > 0 writes at most that often (and always after the last epoch): a head
    on cached features runs an epoch in milliseconds, less than it takes to write and fsync a
    checkpoint, and an interruption then costs at most that many seconds of training.
    """

    def __init__(self, run_dir: Path, phase: str, seed: int, history: dict[str, list[float]] | None = None,
                 early_stopping: ResumableEarlyStopping | None = None,
                 plateau: keras.callbacks.ReduceLROnPlateau | None = None, plateau_state: dict | None = None,
                 extra_state: dict | None = None, min_interval_s: float = 0.0):
        super().__init__()
        self.min_interval_s = min_interval_s
        self._last_write = time.monotonic()
        self.extra_state = extra_state or {}
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        self.run_dir, self.phase, self.seed = Path(run_dir), phase, seed
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.early_stopping, self.plateau, self._plateau_state = early_stopping, plateau, plateau_state
        self.epochs_done = len(next(iter(self.history.values()), []))
        self.stop_requested = threading.Event()

    def on_train_begin(self, logs=None):
        if self.plateau is not None and self._plateau_state:
            self.plateau.wait = int(self._plateau_state["wait"])
            self.plateau.best = float(self._plateau_state["best"])

    def on_train_batch_end(self, batch, logs=None):
        if self.stop_requested.is_set():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stop_requested.is_set():
            return  # this epoch was cut short: keep the previous, complete checkpoint
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs_done = epoch + 1
        last = self.epochs_done >= self.params.get("epochs", 0) or self.model.stop_training
        if last or time.monotonic() - self._last_write >= self.min_interval_s:
            self.write()

    def write(self) -> None:
        """Checkpoint the epochs completed so far (weights, optimizer, best weights, counters)."""
        save_training_state(self.model, self.directory / "state.npz")
        if self.early_stopping is not None:
            self.early_stopping.persist_best()
        state = {**self.extra_state, "phase": self.phase, "epochs_done": self.epochs_done, "seed": self.seed,
                 "history": self.history}
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state()
        if self.plateau is not None:
            state["plateau"] = {"wait": self.plateau.wait, "best": float(self.plateau.best)}
        write_json_atomic(self.directory / "state.json", state)
        self._last_write = time.monotonic()


@contextmanager
def stop_on_sigint(checkpoint: EpochCheckpoint) -> Iterator[None]:
    """First Ctrl-C: finish the batch, keep the last checkpoint, raise TrainingInterrupted.
    A second Ctrl-C raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if checkpoint.stop_requested.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        logger.warning("\nStopping after this batch (Ctrl-C again to abort now) ...")
        checkpoint.stop_requested.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if checkpoint.stop_requested.is_set():
        raise TrainingInterrupted(checkpoint.run_dir, checkpoint.phase, checkpoint.epochs_done,
                                  Path(checkpoint.run_dir) / CHECKPOINT_DIR)
