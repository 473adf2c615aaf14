"""Errors of model selection that the user can fix (a bad argument, a missing optional extra)."""

from __future__ import annotations

from transferlab.errors import ConfigError, MissingDependencyError


class SelectionError(ConfigError):
    """A selection setting or input the user can fix; the message quotes it and says the fix."""


class MissingExtraError(MissingDependencyError):
    """An optional dependency (Optuna for ``--tune``) is not installed; the message says what to install."""
