"""A persistent on-disk cache of bottleneck features, safe to kill and to share.

Layout::

    <cache root>/<fingerprint>/fingerprint.json      what produced these features (readable)
    <cache root>/<fingerprint>/<ab>/<sha256>.feat    one entry per image content hash

* The **fingerprint** is a hash of everything that changes a feature vector: backbone name,
  weights file hash, feature layer, input size, resize settings, preprocessing and this file
  format's version. Change any of them and a new folder is used; nothing stale is ever read.
* An **entry** is keyed by the SHA-256 of the image file's bytes, so renaming or moving an
  image keeps its features, and the same photo in two datasets is computed once.
* Writes are **atomic** (:mod:`transferlab._atomic`; not fsynced: the read-side checksum covers
  power loss). A killed process leaves at most a stray temporary file, never a half-written
  entry. Two processes writing the same entry write identical bytes, and
  the last rename wins; readers never see a partial file.
* Every read is **verified**: magic, length and a BLAKE2b checksum over (key, vector). A bad
  entry is deleted and reported as a miss, so it is recomputed.
* A **full disk** stops the run with :class:`~transferlab._atomic.DiskFullError` (the entries
  written so far are whole and are used by the next run); a cache folder that cannot be written
  (read-only, no permission) raises :class:`CacheDirError`. Both name the folder and ``--cache-dir``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from transferlab._atomic import DiskFullError, atomic_write_bytes
from transferlab._paths import display_path
from transferlab.errors import TransferlabError

FORMAT_VERSION = 1
_MAGIC = b"TLF1"
_HEADER = struct.Struct("<4sI")  # magic, vector length
_DIGEST_SIZE = 16


#: What to do when the cache's disk is full or the folder cannot be written.
CACHE_HINT = ("free space there, or pass --cache-dir DIR (or set TRANSFERLAB_CACHE_DIR) to keep the feature "
              "cache elsewhere")
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class CacheDirError(TransferlabError, OSError):
    """The feature cache folder cannot be written (read-only file system, no permission)."""


@contextmanager
def cache_writes(folder: Path) -> Iterator[None]:
    """Say which folder and which flag when a cache write fails for lack of space or permission."""
    try:
        yield
    except DiskFullError as exc:
        raise exc.with_hint(CACHE_HINT) from exc
    except OSError as exc:
        if exc.errno not in _NOT_WRITABLE:
            raise
        raise CacheDirError(f"cannot write the feature cache in {display_path(folder)} "
                            f"({exc.strerror or exc}): pass --cache-dir DIR with a writable folder "
                            "(or set TRANSFERLAB_CACHE_DIR)") from exc


def fingerprint_of(parts: Mapping[str, object]) -> str:
    """Stable short hash of a JSON-serialisable mapping (key order does not matter)."""
    canonical = json.dumps({**parts, "format": FORMAT_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


class FeatureCache:
    """Feature vectors of one fingerprint, keyed by image content hash."""

    def __init__(self, root: str | os.PathLike, parts: Mapping[str, object]):
        self.root = Path(root).expanduser()
        self.parts = dict(parts)
        self.fingerprint = fingerprint_of(self.parts)
        self.directory = self.root / "features" / self.fingerprint
        description = self.directory / "fingerprint.json"
        with cache_writes(self.root):
            self.directory.mkdir(parents=True, exist_ok=True)
            if not description.exists():
                atomic_write_bytes(description, json.dumps({**self.parts, "format": FORMAT_VERSION},
                                                           indent=2, sort_keys=True).encode("utf-8"))
        self.corrupt_entries = 0

    def entry_path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.feat"

    @staticmethod
    def _digest(key: str, payload: bytes) -> bytes:
        return hashlib.blake2b(key.encode("ascii") + payload, digest_size=_DIGEST_SIZE).digest()

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store one feature vector (any float dtype; stored as float32)."""
        payload = np.ascontiguousarray(vector, dtype="<f4").ravel().tobytes()
        data = _HEADER.pack(_MAGIC, len(payload) // 4) + payload + self._digest(key, payload)
        # No fsync: a killed process cannot lose written pages, and a power cut that tears an
        # entry is caught by the checksum on read (then recomputed).
        with cache_writes(self.root):
            atomic_write_bytes(self.entry_path(key), data)

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector, or None if absent or corrupt (a corrupt entry is deleted)."""
        path = self.entry_path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if self._valid(key, data):
            (_, length) = _HEADER.unpack_from(data)
            return np.frombuffer(data, dtype="<f4", count=length, offset=_HEADER.size).astype(np.float32)
        self.corrupt_entries += 1
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return None

    def _valid(self, key: str, data: bytes) -> bool:
        if len(data) < _HEADER.size + _DIGEST_SIZE:
            return False
        magic, length = _HEADER.unpack_from(data)
        if magic != _MAGIC or len(data) != _HEADER.size + 4 * length + _DIGEST_SIZE:
            return False
        payload = data[_HEADER.size : _HEADER.size + 4 * length]
        return data[-_DIGEST_SIZE:] == self._digest(key, payload)

    def contains(self, key: str) -> bool:
        """Cheap existence check (no verification; :meth:`get` verifies)."""
        return self.entry_path(key).exists()

    def gather(self, keys: Iterable[str], out: np.ndarray) -> list[int]:
        """Fill ``out[i]`` with the vector of ``keys[i]``; return indices that were missing or bad."""
        missing = []
        for i, key in enumerate(keys):
            vector = self.get(key)
            if vector is None or vector.shape[0] != out.shape[1]:
                missing.append(i)
            else:
                out[i] = vector
        return missing
