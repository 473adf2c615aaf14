"""``python -m transferlab``: the same as the ``transferlab`` command."""

from transferlab.cli import entry_point

entry_point()
