"""The base class of errors a user can fix (a bad argument, a bad file, a full disk)."""


class TransferlabError(Exception):
    """An error the user can fix; the CLI prints its message as one line (``error: ...``)."""
