"""Where transferlab keeps data between runs (feature cache, file-check index); paths shown to people."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$TRANSFERLAB_CACHE_DIR``, else the user cache directory (e.g. ``~/.cache/transferlab``)."""
    env = os.environ.get("TRANSFERLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("transferlab"))


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 as ``\\xNN``, control characters escaped.

    The result is for people (messages, CSV, JSON, HTML); open files by the original path.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        raw = text
    else:
        try:
            raw = text.encode("utf-8", "surrogateescape")  # the file system's own bytes
        except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
            raw = text.encode("utf-8", "backslashreplace")
    shown = raw.decode("utf-8", "backslashreplace")
    if shown.isprintable():
        return shown
    # Tabs and newlines in names would break one-line-per-file listings (bad_files.txt).
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in shown)
