"""Durations as users write them (``600``, ``90s``, ``15m``, ``1h30m``); no TensorFlow import."""

from __future__ import annotations

import re

from transferlab.errors import ConfigError


def parse_duration(text: "str | float | int") -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"1.5h"`` or ``"1h30m"`` (a number is seconds).

    Raises:
        ConfigError: (a ValueError) naming the text and the accepted forms.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*",
                             str(text).lower())
        if not parts or not any(parts.groups()):
            raise ConfigError(f"Time budget {text!r} is not a duration: use e.g. 600, 90s, 15m, 1.5h or 1h30m.")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not seconds > 0:
        raise ConfigError(f"Time budget {text!r} must be more than 0 seconds.")
    return seconds
