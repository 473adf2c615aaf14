"""Nothing lost when interrupted: per-epoch checkpoints, resume, and a clean Ctrl-C.

After every epoch (at most every few seconds for the head, whose epochs take milliseconds, and
always after the last one) ``RUN/checkpoint/`` holds one checkpoint, written as one atomic unit:

* ``state-<id>.npz``: weights and optimizer state of the model being trained (NumPy arrays in
  ``model.get_weights()`` / ``optimizer.variables`` order: the model is rebuilt from the run's
  config on resume, so no code is loaded from the checkpoint, and saving takes milliseconds);
* ``best-<id>.npz``: the best weights so far (what early stopping restores);
* ``head-<id>.npz``: the finished head of phase 1, once phase 1 is complete;
* ``state.json``: phase ("head" or "fine-tune"), epochs completed, the history so far, the
  early-stopping and reduce-on-plateau counters, the seed, and under ``files`` the names of the
  three array files above that belong to these counters. Data order and augmentation of
  epoch k derive from (seed, k) alone (see ``make_image_dataset(epochs=...)``), so that is all
  the random state a resumed run needs.

Array files are never overwritten: each checkpoint writes new ones under a fresh ``<id>`` (only
the ones that changed), fsyncs them, then replaces ``state.json`` (the commit), then deletes the
files no longer named. A process killed (or a disk that fills up) at any point leaves a
``state.json`` whose counters and arrays belong together: the previous checkpoint or the new
one, never weights one epoch ahead of their counters. Run directories written before this
(``state.npz``, ``best.npz``, ``head.npz`` and a ``state.json`` without ``files``) still resume.

Ctrl-C stops at the end of the current batch, writes the last completed epoch's checkpoint
(held in memory when throttling skipped writing it), and :class:`TrainingInterrupted` tells the
user which epoch was kept and how to resume; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
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

STATE_FILE = "state.json"
#: The array files of a checkpoint; run directories from before ``files`` used these fixed names.
KINDS = ("state", "best", "head")
_LEGACY_NAMES = {kind: f"{kind}.npz" for kind in KINDS}


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    # The size is known up front: on a full disk nothing is written and the error says how much.
    needed = sum(a.nbytes for a in arrays.values()) + 256 * (len(arrays) + 1)
    atomic_write(path, write, sync=True, needed=needed)


def weight_arrays(model: keras.Model | list[np.ndarray]) -> dict[str, np.ndarray]:
    """``{"w0": ..., "w1": ...}`` in ``model.get_weights()`` order (or of that list itself)."""
    weights = model if isinstance(model, list) else model.get_weights()
    return {f"w{i}": np.asarray(w) for i, w in enumerate(weights)}


def _seed_states(model: keras.Model) -> list:
    """The state variables of the model's random seed generators (dropout masks come from them).

    ``model.weights`` leaves them out, yet a resumed run that restarted them would draw other
    dropout masks than the uninterrupted one: they belong to the training state.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights and "seed_generator_state" in v.path]


def training_state_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """Weights, optimizer variables (moments, iteration count) and the dropout seed states:
    what a resume restores so that it continues exactly where the uninterrupted run would be."""
    arrays = weight_arrays(model)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    arrays.update({f"r{i}": np.asarray(v) for i, v in enumerate(_seed_states(model))})
    return arrays


def save_weights(model: keras.Model | list[np.ndarray], path: Path) -> None:
    """Weights only (``model.get_weights()`` order, or that list itself), written atomically."""
    _savez(path, weight_arrays(model))


def load_weights(model: keras.Model, path: Path) -> None:
    with np.load(path) as data:
        model.set_weights([data[f"w{i}"] for i in range(len(model.get_weights()))])


def save_training_state(model: keras.Model, path: Path) -> None:
    """:func:`training_state_arrays` written atomically to one file."""
    _savez(path, training_state_arrays(model))


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
        seeds = _seed_states(model)
        if sum(1 for k in data.files if k.startswith("r")) == len(seeds):  # absent in older checkpoints
            for i, variable in enumerate(seeds):
                variable.assign(data[f"r{i}"])


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, default=float).encode("utf-8"), sync=True)


def read_state(run_dir: Path) -> dict | None:
    """The committed ``state.json`` of a run's checkpoint, or None before the first one."""
    path = Path(run_dir) / CHECKPOINT_DIR / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _committed_files(directory: Path, state: dict | None) -> dict[str, str]:
    if state is not None and "files" in state:
        return {kind: name for kind, name in state["files"].items() if (directory / name).exists()}
    # A checkpoint from before ``files``: the fixed names, where present.
    return {kind: name for kind, name in _LEGACY_NAMES.items() if (directory / name).exists()}


def checkpoint_file(run_dir: Path, kind: str, state: dict | None = None) -> Path | None:
    """The array file of ``kind`` ("state", "best" or "head") that the committed state names.

    ``state`` is the already read ``state.json`` (read again if None). None when there is none.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    name = _committed_files(directory, state if state is not None else read_state(run_dir)).get(kind)
    return directory / name if name else None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory: the rename is still atomic
        pass
    finally:
        os.close(fd)


def commit_checkpoint(run_dir: Path, state: dict, arrays: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """Write one checkpoint atomically: new array files first, then ``state.json`` naming them.

    Args:
        state: the counters (phase, epochs_done, history, ...), without ``files``.
        arrays: ``{kind: {name: array}}`` for the kinds that changed; the other kinds keep the
            files of the previous checkpoint.

    Returns:
        The committed state (with ``files``).
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    files = _committed_files(directory, read_state(run_dir))
    token = secrets.token_hex(4)
    for kind, data in (arrays or {}).items():
        if kind not in KINDS:
            raise ValueError(f"unknown checkpoint part {kind!r}; one of {', '.join(KINDS)}")
        name = f"{kind}-{token}.npz"
        _savez(directory / name, data)  # fsynced, under a name no reader knows yet
        files[kind] = name
    committed = {**{k: v for k, v in state.items() if k != "files"}, "files": files}
    write_json_atomic(directory / STATE_FILE, committed)  # the commit
    _fsync_dir(directory)  # the rename is on disk before the old files go
    keep = set(files.values())
    for stale in directory.glob("*.npz"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return committed


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on val_loss whose counters and best weights survive a restart."""

    def __init__(self, run_dir: Path, patience: int, state: dict | None = None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.run_dir = Path(run_dir)
        self._resume_state = state
        self._unsaved_best = False
        self._seeded_weights: list[np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait = int(self._resume_state["wait"])
            best = self._resume_state["best"]
            self.best = None if best is None else float(best)
            self.best_epoch = int(self._resume_state["best_epoch"])
            if self._seeded_weights is not None:
                self.best_weights, self._unsaved_best = self._seeded_weights, True
                self._seeded_weights = None
            elif (best_file := checkpoint_file(self.run_dir, "best")) is not None:
                with np.load(best_file) as data:
                    self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return  # interrupted mid-epoch: its numbers are not an epoch's
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before:
            self._unsaved_best = True

    def unsaved_best(self) -> dict[str, np.ndarray] | None:
        """The weights early stopping would restore, if they changed since the last checkpoint.

        :class:`EpochCheckpoint` commits them with its counters (then calls :meth:`mark_saved`),
        so the best weights on disk always match ``state.json``.
        """
        if self._unsaved_best and self.best_weights is not None:
            return weight_arrays(self.best_weights)
        return None

    def mark_saved(self) -> None:
        self._unsaved_best = False

    def seed_baseline(self, model: keras.Model, value: float) -> None:
        """Count ``model``'s current weights as the best so far, at monitored value ``value``.

        Fine-tuning uses it so that the result is only kept if it beats the model it started from;
        the weights go to disk with the first checkpoint.
        """
        self._seeded_weights = model.get_weights()
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
        self._saved_epochs = self.epochs_done
        self._pending: tuple[dict, dict] | None = None
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
        else:
            # Not written yet (throttled), but kept in memory: an interruption during the next
            # epoch writes this one, so the checkpoint is never behind the completed epochs.
            self._pending = self._snapshot()

    @property
    def epochs_saved(self) -> int:
        """Completed epochs in the committed checkpoint."""
        return self._saved_epochs

    def _snapshot(self) -> tuple[dict, dict]:
        arrays = {"state": training_state_arrays(self.model)}
        best = self.early_stopping.unsaved_best() if self.early_stopping is not None else None
        if best is not None:
            arrays["best"] = best
        state = {**self.extra_state, "phase": self.phase, "epochs_done": self.epochs_done, "seed": self.seed,
                 "history": {k: list(v) for k, v in self.history.items()}}
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state()
        if self.plateau is not None:
            state["plateau"] = {"wait": self.plateau.wait, "best": float(self.plateau.best)}
        return arrays, state

    def _commit(self, snapshot: tuple[dict, dict]) -> None:
        arrays, state = snapshot
        commit_checkpoint(self.run_dir, state, arrays)
        if "best" in arrays:
            self.early_stopping.mark_saved()
        self._saved_epochs = state["epochs_done"]
        self._last_write = time.monotonic()
        self._pending = None

    def write(self) -> None:
        """Checkpoint the epochs completed so far (weights, optimizer, best weights, counters), atomically."""
        self._commit(self._snapshot())

    def flush(self) -> None:
        """Write the last completed epoch if throttling held it back (called when interrupted)."""
        if self._pending is not None:
            self._commit(self._pending)


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
        checkpoint.flush()
        raise TrainingInterrupted(checkpoint.run_dir, checkpoint.phase, checkpoint.epochs_saved,
                                  Path(checkpoint.run_dir) / CHECKPOINT_DIR)
