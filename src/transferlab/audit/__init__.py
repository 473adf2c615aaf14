"""Data audit from cached features: likely label errors, duplicates, split leakage, outliers.

    result = transferlab.audit("photos/")          # writes audits/photos-<time>/audit.html
    result.label_issue_rows()                      # likeliest label errors first
    write_clean(result, "clean.csv")               # a path,label,split CSV for `transferlab train`

Modules: :mod:`~transferlab.audit.labels` (out-of-fold probabilities and confident learning),
:mod:`~transferlab.audit.duplicates`, :mod:`~transferlab.audit.outliers`,
:mod:`~transferlab.audit.neighbours`, :mod:`~transferlab.audit.report` (audit.html, audit.csv,
audit.json, the clean CSV) and :mod:`~transferlab.audit.core` (the one call).
"""

from transferlab.audit.core import AuditResult, audit
from transferlab.audit.report import write_clean

__all__ = ["AuditResult", "audit", "write_clean"]
