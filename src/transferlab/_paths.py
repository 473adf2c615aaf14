"""Where transferlab keeps data between runs (feature cache, file-check index)."""

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
