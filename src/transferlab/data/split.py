"""Deterministic, stratified, *stable* train/validation/test assignment.

The rule (what a user needs to reproduce or reason about a split):

    u = first 8 bytes of SHA-256("<seed>\\0<relative path>") as an integer / 2**64   (0 <= u < 1)
    split = "test" if u < test_fraction
            "val"  if u < test_fraction + val_fraction
            "train" otherwise

Each file's split depends only on its own path (relative to the dataset root, so moving the
whole folder changes nothing) and the seed, never on the other files. Consequences:

* Adding images later never moves an existing image to another split.
* The split is stratified in expectation: every class is split with the same fractions,
  independently of the others. Very small classes can deviate from the exact fractions;
  :func:`split_warnings` says when a class got no validation or test image.
* Byte-identical copies (within a class) follow the copy with the smallest path, so a
  duplicate can never sit in train while its twin is in test.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Iterable, Mapping

from transferlab.errors import ConfigError

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
DEFAULT_SEED = 42


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ValueError unless both fractions are in [0, 1) and leave some training data."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}.")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training data; keep it below 1."
        )


def hash_unit(rel_path: str, seed: int) -> float:
    """Map (seed, path) to a uniform number in [0, 1), identical on every machine."""
    digest = hashlib.sha256(f"{seed}\0{rel_path}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(rel_path: str, *, seed: int = DEFAULT_SEED, val_fraction: float = DEFAULT_VAL_FRACTION,
                 test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """Return "train", "val" or "test" for one file by the rule in the module docstring."""
    u = hash_unit(rel_path, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def split_warnings(labels_and_splits: Iterable[tuple[str, str]], class_names: Iterable[str],
                   expected: Mapping[str, float]) -> list[str]:
    """Warn about classes that got no image in a split that should have some."""
    counts = Counter(labels_and_splits)
    warnings = []
    for name in class_names:
        for split, fraction in expected.items():
            if fraction > 0 and counts[(name, split)] == 0:
                warnings.append(f"class {name!r} has no image in the {split} split")
    return warnings
