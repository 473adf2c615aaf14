"""Errors of model selection that the user can fix (a bad argument, a missing optional extra)."""

from __future__ import annotations


class SelectionError(ValueError):
    """A selection setting or input the user can fix; the message quotes it and says the fix."""


class MissingExtraError(SelectionError):
    """An optional dependency (e.g. Optuna for ``--tune``) is not installed; the message says what to install."""
