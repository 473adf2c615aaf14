"""Default thresholds and choices of the audit, in a module without heavy imports (the CLI reads them).

Where each number comes from is said beside its use: :mod:`~transferlab.audit.labels`,
:mod:`~transferlab.audit.duplicates`, :mod:`~transferlab.audit.outliers`.
"""

DEFAULT_FOLDS = 5
# Inverse L2 regularisation of the linear probe (see labels.py).
DEFAULT_C = 0.05
# Near-duplicate candidates: cosine feature similarity at least this (see duplicates.py).
DEFAULT_MIN_SIMILARITY = 0.70
# Near duplicates: perceptual hashes at most this many bits of 64 apart (see duplicates.py).
DEFAULT_MAX_HASH_DISTANCE = 6
# Outliers: robust z-score at least this (see outliers.py).
DEFAULT_OUTLIER_THRESHOLD = 3.5
# Nearest neighbours per image for the duplicate and outlier checks.
DEFAULT_NEIGHBOURS = 10

# What the clean CSV does with each kind of finding (see report.write_clean).
LABEL_FIXES = ("relabel", "drop", "keep")
DUPLICATE_FIXES = ("keep-one", "keep")
OUTLIER_FIXES = ("drop", "keep")
