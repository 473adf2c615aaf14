"""Write a file so that readers see the old content or the new, never a part of it.

The one way transferlab replaces a file that another run or process may read: feature cache
entries, checkpoints, converted ONNX files, a run's model and config. The data goes to a
temporary file in the same folder (same file system, so the rename is atomic), which is then
moved into place; if the writer is interrupted, even by Ctrl-C, or the disk fills up, the
temporary file is removed and the old file (if any) is untouched.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) raises :class:`DiskFullError`: one line that
names the file, how much it needed and how much is free there, and what to do.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from transferlab._paths import display_path
from transferlab.errors import TransferlabError

_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer can still use on the file system of ``path`` (or its parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _on_disk(path: Path, nbytes: int) -> int:
    """``nbytes`` rounded up to whole blocks of the file system (a 90-byte file takes 4 KiB)."""
    try:
        block = os.statvfs(path.parent if path.parent.exists() else path).f_frsize or 4096
    except OSError:
        block = 4096
    return max(1, math.ceil(nbytes / block)) * block


class DiskFullError(TransferlabError, OSError):
    """No space left where transferlab had to write; the message names the path and the need."""

    def __init__(self, path: str | os.PathLike, needed: int | None = None, *, at_least: bool = False,
                 hint: str = ""):
        self.path, self.needed, self.at_least, self.hint = Path(path), needed, at_least, hint
        free = free_bytes(path)
        need = "" if needed is None else f"needs {'at least ' if at_least else ''}{_size(needed)}, "
        have = "free space unknown" if free is None else f"{_size(free)} free there"
        self.message = f"no space left on device writing {display_path(path)} ({need}{have})"
        super().__init__(self.message + (f"; {hint}" if hint else ""))
        self.errno = errno.ENOSPC

    def with_hint(self, hint: str) -> DiskFullError:
        """The same error with what to do appended (callers know which flag moves the file)."""
        return DiskFullError(self.path, self.needed, at_least=self.at_least,
                             hint=f"{self.hint}; {hint}" if self.hint else hint)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


@contextmanager
def disk_full_guard(where: str | os.PathLike, hint: str = "") -> Iterator[None]:
    """Turn an out-of-space ``OSError`` raised inside (by Keras, TensorFlow, ...) into a :class:`DiskFullError`.

    ``where`` is named when the error does not say which file it was writing.
    """
    try:
        yield
    except DiskFullError as exc:
        raise (exc.with_hint(hint) if hint and hint not in exc.hint else exc) from exc.__cause__
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(exc.filename or where, hint=hint) from exc


def ensure_space(path: str | os.PathLike, needed: int) -> None:
    """Raise :class:`DiskFullError` now if a file of ``needed`` bytes cannot fit at ``path``.

    For files written through a memory map: on a full disk those do not fail with an error but
    kill the process (SIGBUS) when a page cannot be allocated.
    """
    path = Path(path)
    room = free_bytes(path.parent)
    if room is not None and _on_disk(path, needed) > room:
        raise DiskFullError(path, _on_disk(path, needed))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, sync: bool = False,
                 needed: int | None = None, keep_suffix: bool = False) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path``.

    Args:
        sync: force the bytes to disk before the rename (for files that must survive a power
            cut; the feature cache skips it because it verifies entries on read instead).
        needed: the file's size when known: if the file system has less room, nothing is
            written at all and :class:`DiskFullError` says so.
        keep_suffix: the temporary name ends with ``path``'s own name (writers such as
            ``keras.Model.save`` insist on a ``.keras`` suffix).

    Raises:
        DiskFullError: no space left; ``path`` is unchanged and no temporary file remains.
    """
    path = Path(path)
    if needed is not None:
        ensure_space(path, needed)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-",
                                   suffix=f"-{path.name}" if keep_suffix else f"-{path.name}.part")
        os.close(fd)
        write(tmp)
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        written = 0
        if tmp is not None:
            try:
                written = os.path.getsize(tmp)
            except OSError:
                pass
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            if needed is not None:
                raise DiskFullError(path, _on_disk(path, needed)) from exc
            raise DiskFullError(path, written or None, at_least=True) from exc
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = False) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), sync=sync, needed=len(data))
