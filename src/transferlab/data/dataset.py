"""A checked, split, labeled image dataset: the input of every later stage.

``load_dataset(path)`` finds the files (class folders, a pre-split folder or a CSV), checks
every one of them (see :mod:`transferlab.data.validate`), drops bad files and label conflicts
with their reasons, and assigns train/val/test splits (see :mod:`transferlab.data.split`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from transferlab._paths import default_cache_dir
from transferlab.data.check_cache import CheckCache
from transferlab.data.files import display_path
from transferlab.data.sources import DatasetError, find_samples
from transferlab.data.split import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    assign_split,
    check_fractions,
    split_warnings,
)
from transferlab.data.validate import check_files
from transferlab.progress import plural

logger = logging.getLogger("transferlab")


@dataclass(frozen=True)
class ImageRecord:
    """A file that passed the checks, with its label, split and content hash."""

    path: str
    rel_path: str
    label: str
    split: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


@dataclass
class ImageDataset:
    """Checked files of a dataset. ``class_names`` is sorted and fixes the label indices."""

    root: str
    layout: str
    class_names: list[str]
    records: list[ImageRecord]
    bad_files: list[BadFile] = field(default_factory=list)
    label_conflicts: list[dict] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION

    @property
    def class_to_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}

    def split(self, name: str) -> list[ImageRecord]:
        """Records of one split ("train", "val" or "test"), in stable path order."""
        return [r for r in self.records if r.split == name]

    def has_split(self, name: str) -> bool:
        return any(r.split == name for r in self.records)

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class (all classes, zeros included), optionally for one split."""
        counter = Counter(r.label for r in self.records if split is None or r.split == split)
        return {name: counter.get(name, 0) for name in self.class_names}

    def labels(self, records: list[ImageRecord]) -> list[int]:
        index = self.class_to_index
        return [index[r.label] for r in records]

    def summary(self) -> dict:
        """The inspection report as a JSON-serialisable dict."""
        counts = self.counts()
        nonzero = [c for c in counts.values() if c > 0]
        widths = [r.width for r in self.records] or [0]
        heights = [r.height for r in self.records] or [0]
        return {
            "root": self.root,
            "layout": self.layout,
            "classes": counts,
            "total": len(self.records),
            "splits": {s: self.counts(s) for s in ("train", "val", "test") if self.has_split(s)},
            "imbalance_ratio": (max(nonzero) / min(nonzero)) if nonzero else None,
            "image_size": {
                "min_width": min(widths), "max_width": max(widths),
                "min_height": min(heights), "max_height": max(heights),
            },
            # Paths for people: bytes that are not UTF-8 escaped (the records keep the real ones).
            "bad_files": [{"path": display_path(b.path), "reason": b.reason} for b in self.bad_files],
            "label_conflicts": [{**c, "paths": [display_path(p) for p in c["paths"]]} for c in self.label_conflicts],
            "duplicate_groups": [[display_path(p) for p in group] for group in self.duplicate_groups],
            "problems": self.problems,
            "warnings": self.warnings,
            "split_rule": {"seed": self.seed, "val_fraction": self.val_fraction, "test_fraction": self.test_fraction},
        }

    def write_splits(self, path: str | os.PathLike) -> Path:
        """Write ``path,label,split,sha256`` (paths relative to the root) so a run can be reproduced."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "split", "sha256"])
            for r in self.records:
                writer.writerow([display_path(r.rel_path), r.label, r.split, r.sha256])
        return path

    def write_bad_files(self, path: str | os.PathLike) -> Path:
        """Write one ``path<TAB>reason`` line per skipped file (label conflicts included)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{display_path(b.path)}\t{b.reason}" for b in self.bad_files]
        path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        return path


def load_dataset(
    source: str | os.PathLike,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
    show_progress: bool = True,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
    recheck: bool = False,
) -> ImageDataset:
    """Find, check and split a labeled image dataset.

    Args:
        source: a folder of class subfolders, a folder with ``train/`` and ``val/`` (or
            ``validation/``) and optionally ``test/`` subfolders (used as is), or a CSV with
            ``path,label`` (and optionally ``split``) columns.
        val_fraction, test_fraction: fractions for the hash split (ignored where the layout
            or CSV fixes the split).
        seed: seed of the split rule (see :mod:`transferlab.data.split`).
        workers: threads used to check files (default: all CPUs).
        strict: raise :class:`DatasetError` on problems (a class left empty, fewer than
            two classes). With ``strict=False`` they are listed in ``problems`` instead.
        cache_dir: where verdicts of earlier checks are kept (default: the user cache directory,
            see :mod:`transferlab.data.check_cache`); files unchanged since then are not decoded again.
        recheck: decode every file even if it is unchanged since its last check.

    Returns:
        ImageDataset with only the files that decode, and the rest in ``bad_files``.
    """
    check_fractions(val_fraction, test_fraction)
    layout, samples = find_samples(source)
    # Broken links, FIFOs, devices ... are reported as found by the walk and never opened.
    bad_files = [BadFile(s.path, s.problem) for s in samples if s.problem]
    readable = [s for s in samples if not s.problem]
    cache = CheckCache(cache_dir or default_cache_dir())
    checks = check_files([s.path for s in readable], workers=workers, show_progress=show_progress, cache=cache,
                         recheck=recheck)

    good = []
    for sample, check in zip(readable, checks):
        if check.ok:
            good.append((sample, check))
        else:
            bad_files.append(BadFile(sample.path, check.reason))

    # The same bytes under two labels cannot both be right: report and leave all copies out.
    labels_by_hash: dict[str, set[str]] = defaultdict(set)
    for sample, check in good:
        labels_by_hash[check.sha256].add(sample.label)
    conflicts: dict[str, list[tuple[str, str]]] = defaultdict(list)
    kept = []
    for sample, check in good:
        if len(labels_by_hash[check.sha256]) > 1:
            conflicts[check.sha256].append((sample.path, sample.label))
            other = sorted(labels_by_hash[check.sha256] - {sample.label})
            bad_files.append(BadFile(sample.path, f"label conflict: same bytes also labeled {', '.join(other)}"))
        else:
            kept.append((sample, check))
    label_conflicts = [  # path_labels: the label of each of paths, in the same order
        {"sha256": digest, "labels": sorted(labels_by_hash[digest]), "paths": [p for p, _ in sorted(members)],
         "path_labels": [label for _, label in sorted(members)]}
        for digest, members in sorted(conflicts.items())
    ]

    # Duplicates inside a class follow the first copy's split (no train/test leakage).
    first_copy: dict[tuple[str, str], str] = {}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for sample, check in sorted(kept, key=lambda sc: sc[0].rel_path):
        key = (sample.label, check.sha256)
        first_copy.setdefault(key, sample.rel_path)
        groups[key].append(sample.rel_path)
    duplicate_groups = [paths for paths in groups.values() if len(paths) > 1]

    fixed_split = layout == "presplit" or any(s.split for s, _ in kept)
    records = []
    for sample, check in kept:
        split = sample.split
        if split is None:
            anchor = first_copy[(sample.label, check.sha256)]
            split = assign_split(anchor, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        records.append(ImageRecord(sample.path, sample.rel_path, sample.label, split, check.sha256,
                                   check.width, check.height))
    records.sort(key=lambda r: r.rel_path)

    # Classes come from the folders/CSV, so a class whose every file is bad is still seen.
    class_names = sorted({s.label for s in samples})
    counts = Counter(r.label for r in records)
    problems = []
    empty = [name for name in class_names if counts[name] == 0]
    if empty:
        problems.append(
            f"class(es) with no usable image: {', '.join(empty)}. Add images to them or remove the folder(s)."
        )
    if len([n for n in class_names if counts[n] > 0]) < 2:
        problems.append(f"need at least two classes with images to train a classifier, found {len(class_names) - len(empty)}.")

    if fixed_split:
        expected = {"val": 1.0} if not any(r.split == "val" for r in records) else {}
    else:
        expected = {"val": val_fraction, "test": test_fraction}
    warnings = split_warnings(((r.label, r.split) for r in records), class_names, expected)
    if duplicate_groups:
        warnings.append(f"{sum(len(g) for g in duplicate_groups)} files are byte-identical copies within a class "
                        f"({plural(len(duplicate_groups), 'group')}); copies are kept in the same split")
    if layout == "presplit":
        warnings.extend(_cross_split_leaks(records))

    dataset = ImageDataset(
        root=str(Path(source).resolve()), layout=layout, class_names=class_names, records=records,
        bad_files=bad_files, label_conflicts=label_conflicts, duplicate_groups=duplicate_groups,
        problems=problems, warnings=warnings, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
    )
    if bad_files:
        shown = "; ".join(f"{display_path(b.path)}: {b.reason}" for b in bad_files[:3])
        more = f"; and {len(bad_files) - 3} more" if len(bad_files) > 3 else ""
        logger.warning("skipped %s (%s%s). `transferlab inspect` lists them all; a run writes them to "
                       "bad_files.txt.", plural(len(bad_files), "unreadable file"), shown, more)
    if strict and problems:
        raise DatasetError(f"{source}: " + " ".join(problems))
    return dataset


def _cross_split_leaks(records: list[ImageRecord]) -> list[str]:
    splits_by_hash: dict[str, set[str]] = defaultdict(set)
    for r in records:
        splits_by_hash[r.sha256].add(r.split)
    leaks = sum(1 for s in splits_by_hash.values() if len(s) > 1)
    if leaks:
        return [f"{leaks} images appear byte-identical in more than one of the given splits (train/val/test leakage)"]
    return []


def inspect_dataset(source: str | os.PathLike, **kwargs) -> dict:
    """Check a dataset without raising on problems; returns :meth:`ImageDataset.summary`."""
    kwargs.setdefault("strict", False)
    return load_dataset(source, **kwargs).summary()
