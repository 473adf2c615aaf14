"""Data audit from cached features: likely label errors, duplicates, split leakage, outliers.

    result = transferlab.audit("photos/")          # writes audits/photos-<time>/audit.html
    result.label_issue_rows()                      # likeliest label errors first
    write_clean(result, "clean.csv")               # a path,label,split CSV for `transferlab train`

Modules: :mod:`~transferlab.audit.labels` (out-of-fold probabilities and confident learning),
:mod:`~transferlab.audit.duplicates`, :mod:`~transferlab.audit.outliers`,
:mod:`~transferlab.audit.neighbours`, :mod:`~transferlab.audit.result` (what was found),
:mod:`~transferlab.audit.report` (audit.html, audit.csv, audit.json, the clean CSV) and
:mod:`~transferlab.audit.core` (the one call).
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

__all__ = ["AuditResult", "audit", "write_clean"]
# Imported on first use, so that the CLI can read this package's defaults without numpy or scikit-learn.
from transferlab._lazy import lazy_attributes

_LAZY = {"AuditResult": "transferlab.audit.result", "audit": "transferlab.audit.core",
         "write_clean": "transferlab.audit.report"}

if TYPE_CHECKING:  # pragma: no cover
    from transferlab.audit.core import audit  # noqa: F401
    from transferlab.audit.report import write_clean  # noqa: F401
    from transferlab.audit.result import AuditResult  # noqa: F401


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


class _CallableModule(types.ModuleType):
    """``transferlab.audit`` is this package *and* the one-call function: ``transferlab.audit("photos/")``.

    Importing any ``transferlab.audit.*`` module binds the package to the name ``transferlab.audit``,
    so a plain function of that name would be replaced by the package; calling the package instead
    works in every import order.
    """

    def __call__(self, *args, **kwargs) -> AuditResult:
        from transferlab.audit.core import audit

        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
