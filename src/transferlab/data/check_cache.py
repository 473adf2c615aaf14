"""Remember file checks between runs: a file that has not changed is not decoded again.

Checking means reading, hashing and fully decoding every image (:mod:`transferlab.data.validate`):
seconds for a thousand photos, minutes for a few hundred thousand, and the same answer every
time for files nobody touched. The verdicts are kept in one SQLite table in the cache directory
(``<cache>/file_checks.sqlite3``), keyed by the file's absolute path and trusted only while its
size, modification time, status-change time and inode are all unchanged, as ``git`` and
``make`` decide what changed. Anything else (edited, replaced, moved, touched) is checked again.

* Racy stamps: a file changed within the file system's timestamp granularity of being checked
  could keep its stamp, so verdicts on files modified in the last few seconds are not stored
  (git's "racily clean" rule).
* ``CHECKER_VERSION`` is part of the key: when the decoding rules change, old verdicts are ignored.
* The cache is an optimisation only: if the database cannot be opened or written (read-only
  disk, locked for too long, corrupt), files are simply checked as if it were empty.
* SQLite serialises writers, so runs sharing a cache directory do not corrupt it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

logger = logging.getLogger("transferlab")

DB_NAME = "file_checks.sqlite3"
# Bump when check_file's verdicts change (decoder rules, reasons): older verdicts are then ignored.
CHECKER_VERSION = 1
# Files modified more recently than this may change again without changing their stamp.
RACY_SECONDS = 3.0
_LOCK_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, version INTEGER,
    ok INTEGER, sha256 TEXT, width INTEGER, height INTEGER, format TEXT, reason TEXT
)
"""


@dataclass(frozen=True)
class FileCheck:
    """Result of checking one file: either decoded metadata or the reason it is bad."""

    path: str
    ok: bool
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    reason: str = ""


@dataclass(frozen=True)
class FileStamp:
    """What must stay the same for an earlier check of a file to still hold."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str) -> FileStamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def settled(self, now_ns: int) -> bool:
        """True when the file was last changed long enough ago for the stamp to be trusted."""
        return now_ns - max(self.mtime_ns, self.ctime_ns) > RACY_SECONDS * 1e9


class CheckCache:
    """File-check verdicts from earlier runs, stored under ``directory``."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory).expanduser() / DB_NAME
        self._broken = False

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=_LOCK_TIMEOUT_S)
        connection.execute(_SCHEMA)
        return connection

    def _failed(self, action: str, exc: Exception) -> None:
        # Never fail a run over the cache: say why once and check files the slow way.
        if not self._broken:
            logger.warning("cannot %s the file-check cache %s (%s: %s); checking files without it", action,
                           self.path, type(exc).__name__, exc)
        self._broken = True

    def lookup(self, paths: Sequence[str]) -> tuple[dict[str, FileCheck], dict[str, FileStamp]]:
        """Earlier verdicts still valid for ``paths``, and the current stamp of every path.

        Returns:
            (known, stamps): ``known[path]`` is a :class:`FileCheck` (with ``path`` as given) for
            each file unchanged since it was checked; ``stamps[path]`` for every file that exists.
        """
        stamps = {p: s for p in paths if (s := FileStamp.of(p)) is not None}
        if not stamps or self._broken or not self.path.exists():
            return {}, stamps
        wanted = {os.path.abspath(p): p for p in stamps}
        known: dict[str, FileCheck] = {}
        try:
            with closing(self._connect()) as db:
                db.execute("CREATE TEMP TABLE wanted (path TEXT PRIMARY KEY)")
                db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((p,) for p in wanted))
                rows = db.execute(
                    "SELECT c.path, size, mtime_ns, ctime_ns, inode, ok, sha256, width, height, format, reason "
                    "FROM checks c JOIN wanted USING (path) WHERE version = ?", (CHECKER_VERSION,))
                for path, size, mtime, ctime, inode, ok, sha256, width, height, fmt, reason in rows:
                    given = wanted[path]
                    if stamps[given] == FileStamp(size, mtime, ctime, inode):
                        known[given] = FileCheck(given, bool(ok), sha256, width, height, fmt, reason)
        except (sqlite3.Error, OSError) as exc:
            self._failed("read", exc)
            return {}, stamps
        return known, stamps

    def store(self, checks: Iterable[FileCheck], stamps: dict[str, FileStamp]) -> int:
        """Remember verdicts of files whose stamp (taken before checking) has settled; returns how many."""
        if self._broken:
            return 0
        now = time.time_ns()
        rows = [(os.path.abspath(c.path), s.size, s.mtime_ns, s.ctime_ns, s.inode, CHECKER_VERSION, int(c.ok),
                 c.sha256, c.width, c.height, c.format, c.reason)
                for c in checks if (s := stamps.get(c.path)) is not None and s.settled(now)]
        if not rows:
            return 0
        try:
            with closing(self._connect()) as db, db:
                db.executemany("INSERT OR REPLACE INTO checks VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        except (sqlite3.Error, OSError) as exc:
            self._failed("write", exc)
            return 0
        return len(rows)

