"""What a path in a user's folder is, told without opening it; reading it without blocking.

Folders that come off network shares, old archives and camera dumps hold more than files:
symbolic links that loop or point nowhere, named pipes (FIFOs), sockets and device files, and
names that are not valid UTF-8. Opening a FIFO for reading waits for a writer forever, so
nothing in transferlab opens a path before :func:`describe` has said it is a regular file
(``lstat``/``stat`` only), and :func:`read_regular_file` opens with ``O_NONBLOCK`` and checks
again on the open descriptor, so a file swapped for a FIFO in between cannot block either.

Names are kept exactly as the file system gave them (Python's ``surrogateescape`` strings turn
back into the same bytes when opened); :func:`display_path` shows them escaped
(``caf\\xe9.jpg``) wherever they are printed or written to a text file.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

from transferlab._paths import display_path

__all__ = ["PathKind", "UnreadableFileError", "describe", "display_path", "read_regular_file"]

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


class PathKind(NamedTuple):
    """What :func:`describe` found: ``kind`` is "file", "dir" or "bad" (``reason`` says why)."""

    kind: str
    reason: str = ""
    stat: os.stat_result | None = None


def _special_kind(mode: int) -> str | None:
    for test, name in _SPECIAL_KINDS:
        if test(mode):
            return name
    return None


def describe(path: str | os.PathLike) -> PathKind:
    """Classify ``path`` with ``lstat``/``stat`` only (never opens it, so it cannot block).

    Links are followed; a link that loops or points nowhere is "bad" with the reason, reported
    under the link's own name. Special files (FIFOs, sockets, devices) are "bad" too.
    """
    try:
        info = os.lstat(path)
    except OSError as exc:
        return PathKind("bad", _os_reason(exc))
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return PathKind("bad", "symbolic link loop (the link leads back to itself)")
            if exc.errno == errno.ENOENT:
                try:
                    target = display_path(os.readlink(path))
                except OSError:
                    target = "?"
                return PathKind("bad", f"dangling symbolic link (its target {target} does not exist)")
            return PathKind("bad", f"broken symbolic link ({_os_reason(exc)})")
    if stat.S_ISDIR(info.st_mode):
        return PathKind("dir", stat=info)
    if stat.S_ISREG(info.st_mode):
        return PathKind("file", stat=info)
    special = _special_kind(info.st_mode) or "special file"
    return PathKind("bad", f"{special}, not a regular file: skipped without opening it", info)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "file not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return f"cannot read file ({exc.strerror or exc})"


class UnreadableFileError(OSError):
    """A path that is not a readable regular file; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{display_path(path)}: {reason}")


def read_regular_file(path: str | os.PathLike) -> bytes:
    """All bytes of a regular file; never blocks on a FIFO, socket or device.

    Raises:
        UnreadableFileError: the path is missing, a special file, a broken link, a folder or
            unreadable (``reason`` as in :func:`describe`).
    """
    found = describe(path)
    if found.kind != "file":
        raise UnreadableFileError(path, found.reason or "a folder, not a file")
    try:
        # O_NONBLOCK: if the path became a FIFO since describe(), open returns at once.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableFileError(path, _os_reason(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFileError(path, f"{_special_kind(mode) or 'special file'}, not a regular file")
        try:
            return fh.read()
        except OSError as exc:
            raise UnreadableFileError(path, _os_reason(exc)) from None
