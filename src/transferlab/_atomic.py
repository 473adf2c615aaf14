"""Write a file so that readers see the old content or the new, never a part of it.

The one way transferlab replaces a file that another run or process may read: feature cache
entries, checkpoints, converted ONNX files. The data goes to a temporary file in the same
folder (same file system, so the rename is atomic), which is then moved into place; if the
writer is interrupted, even by Ctrl-C, the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, sync: bool = False) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path``.

    ``sync`` forces the bytes to disk before the rename (for files that must survive a power cut;
    the feature cache skips it because it verifies entries on read instead).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}.part")
    os.close(fd)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = False) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), sync=sync)
