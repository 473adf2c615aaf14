"""Find the labeled files of a dataset: class folders, a pre-split folder, or a CSV.

Three layouts are accepted:

1. ``ROOT/<class>/**/<file>``: the layout of ``keras.utils.image_dataset_from_directory``.
2. ``ROOT/train/<class>/...``, ``ROOT/val/`` (or ``validation/``) and optionally ``ROOT/test/``:
   a split made by the user, used as is.
3. ``labels.csv`` with a header holding ``path`` and ``label`` columns (an optional ``split``
   column with train/val/test is honoured); paths are relative to the CSV's folder.

Hidden files and folders (dot-files, ``Thumbs.db``, ``desktop.ini``, ``__MACOSX``) are ignored.
Every other file is a candidate: whether it is an image is decided later by its content.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import TransferlabError

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "ehthumbs.db"})


class DatasetError(TransferlabError, ValueError):
    """The dataset cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    """One labeled file. ``split`` is set when the layout or CSV fixes it, else None."""

    path: str  # absolute path
    rel_path: str  # POSIX path relative to the dataset root: stable across machines
    label: str
    split: str | None = None


def is_hidden(name: str) -> bool:
    """True for files a user never meant as data (dot-files, OS thumbnails)."""
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def walk_files(folder: Path) -> list[Path]:
    """Every non-hidden file below ``folder`` (recursively, links followed), in sorted order."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not is_hidden(f))
    return files


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def _split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in _class_dirs(root):
        split = _SPLIT_ALIASES.get(child.name.lower())
        if split is not None and split not in found:
            found[split] = child
    # Only call it a pre-split layout when it has a train folder and a val or test folder;
    # a dataset that merely has a class called "test" stays a class-folder dataset.
    if "train" in found and ("val" in found or "test" in found):
        return found
    return {}


def detect_layout(source: str | os.PathLike) -> str:
    """Return ``"csv"``, ``"presplit"`` or ``"folders"`` for a dataset path."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return "csv"
        raise DatasetError(f"{path} is a file but not a CSV; pass a folder of class subfolders or a CSV with path,label columns.")
    if not path.is_dir():
        raise DatasetError(f"Dataset not found: {path}. Pass a folder of class subfolders or a CSV of path,label.")
    return "presplit" if _split_dirs(path) else "folders"


def _from_class_folders(root: Path, base: Path, split: str | None) -> list[Sample]:
    samples = []
    for class_dir in _class_dirs(root):
        for file in walk_files(class_dir):
            samples.append(Sample(str(file.resolve()), file.relative_to(base).as_posix(), class_dir.name, split))
    return samples


def _from_csv(csv_path: Path) -> list[Sample]:
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        sample_text = fh.read(4096)
        fh.seek(0)
        dialect = csv.Sniffer().sniff(sample_text, delimiters=",;\t") if sample_text else csv.excel
        reader = csv.DictReader(fh, dialect=dialect)
        fields = {name.strip().lower(): name for name in (reader.fieldnames or [])}
        if "path" not in fields or "label" not in fields:
            raise DatasetError(
                f"{csv_path}: the header must name a 'path' and a 'label' column "
                f"(found: {', '.join(reader.fieldnames or []) or 'no header'})."
            )
        samples = []
        for line_no, row in enumerate(reader, start=2):
            rel, label = (row[fields["path"]] or "").strip(), (row[fields["label"]] or "").strip()
            if not rel or not label:
                raise DatasetError(f"{csv_path}, line {line_no}: empty path or label.")
            split = None
            if "split" in fields and (row[fields["split"]] or "").strip():
                raw = row[fields["split"]].strip().lower()
                split = _SPLIT_ALIASES.get(raw)
                if split is None:
                    raise DatasetError(f"{csv_path}, line {line_no}: unknown split {raw!r}; use train, val or test.")
            file = (base / rel).resolve()
            samples.append(Sample(str(file), Path(rel).as_posix(), label, split))
    return samples


def find_samples(source: str | os.PathLike) -> tuple[str, list[Sample]]:
    """List every candidate file with its label. Returns ``(layout, samples)``.

    Raises:
        DatasetError: when the path is missing, or has no class subfolders.
    """
    path = Path(source)
    layout = detect_layout(path)
    if layout == "csv":
        samples = _from_csv(path)
    elif layout == "presplit":
        samples = []
        for split, folder in _split_dirs(path).items():
            samples.extend(_from_class_folders(folder, path, split))
    else:
        if not _class_dirs(path):
            raise DatasetError(
                f"{path} has no class subfolders. Put each class's images in its own folder "
                f"({path}/<class name>/image.jpg), or pass a CSV with path,label columns."
            )
        samples = _from_class_folders(path, path, None)
    return layout, samples
