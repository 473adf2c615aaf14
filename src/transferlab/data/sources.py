"""Find the labeled files of a dataset: class folders, a pre-split folder, or a CSV.

Three layouts are accepted:

1. ``ROOT/<class>/**/<file>``: the layout of ``keras.utils.image_dataset_from_directory``.
2. ``ROOT/train/<class>/...``, ``ROOT/val/`` (or ``validation/``) and optionally ``ROOT/test/``:
   a split made by the user, used as is.
3. ``labels.csv`` with a header holding ``path`` and ``label`` columns (an optional ``split``
   column with train/val/test is honoured); paths are relative to the CSV's folder.

Hidden files and folders (dot-files, ``Thumbs.db``, ``desktop.ini``, ``__MACOSX``) are ignored.
Every other file is a candidate: whether it is an image is decided later by its content.

The walk finishes on any folder (see :mod:`transferlab.data.files`): links are followed, but a
folder link leading back to a folder above it is not entered again; a link that loops or points
nowhere, a FIFO, a socket or a device file becomes a sample with a ``problem`` (reported as a bad
file under its own path, never opened); names that are not valid UTF-8 keep their bytes.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.data.files import describe, display_path
from transferlab.errors import TransferlabError

logger = logging.getLogger("transferlab")

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "ehthumbs.db"})


class DatasetError(TransferlabError, ValueError):
    """The dataset cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    """One labeled file. ``split`` is set when the layout or CSV fixes it, else None.

    ``problem`` is set when the path is not a readable regular file (a broken link, a FIFO, ...):
    it is reported as a bad file with that reason and never opened.
    """

    path: str  # absolute path (the link's own path for links; bytes kept for undecodable names)
    rel_path: str  # POSIX path relative to the dataset root: stable across machines
    label: str
    split: str | None = None
    problem: str | None = None


def is_hidden(name: str) -> bool:
    """True for files a user never meant as data (dot-files, OS thumbnails)."""
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def walk_entries(folder: Path) -> list[tuple[Path, str | None]]:
    """Every non-hidden entry below ``folder`` that is not a folder, with its problem or None.

    Recursive, links followed, in sorted order (a folder's files, then its subfolders). Never
    opens a file and always finishes: a folder reached again through a link to one of its own
    parents is reported (problem "symbolic link loop ...") instead of entered; unreadable
    folders are reported too. Regular files have problem None.
    """
    entries: list[tuple[Path, str | None]] = []
    root_stat = describe(folder).stat
    # Each pending folder carries the (device, inode) of the folders above it: a link back to
    # one of them is a loop. Two links to the same folder elsewhere are both walked, as before.
    stack: list[tuple[Path, frozenset]] = [(Path(folder), frozenset({(root_stat.st_dev, root_stat.st_ino)}
                                                                     if root_stat else ()))]
    while stack:
        directory, above = stack.pop()
        try:
            with os.scandir(directory) as listing:
                names = sorted(e.name for e in listing if not is_hidden(e.name))
        except OSError as exc:
            entries.append((directory, f"cannot read folder ({exc.strerror or exc})"))
            continue
        subdirs = []
        for name in names:
            path = directory / name
            found = describe(path)
            if found.kind == "dir":
                key = (found.stat.st_dev, found.stat.st_ino)
                if key in above:
                    entries.append((path, "symbolic link loop (a folder link back to a folder above it): "
                                          "not entered"))
                else:
                    subdirs.append((path, above | {key}))
            else:
                entries.append((path, found.reason or None))
        stack.extend(reversed(subdirs))
    return entries


def walk_files(folder: Path) -> list[Path]:
    """Every non-hidden regular file below ``folder`` (see :func:`walk_entries`), in sorted order.

    Entries that are not readable regular files are left out, each with a logged warning.
    """
    files = []
    for path, problem in walk_entries(folder):
        if problem is None:
            files.append(path)
        else:
            logger.warning("skipped %s: %s", display_path(path), problem)
    return files


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not is_hidden(p.name) and describe(p).kind == "dir")


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
        raise DatasetError(f"{display_path(path)} is a file but not a CSV; pass a folder of class subfolders or a CSV with path,label columns.")
    if not path.is_dir():
        raise DatasetError(f"Dataset not found: {display_path(path)}. Pass a folder of class subfolders or a CSV of path,label.")
    return "presplit" if _split_dirs(path) else "folders"


def _from_class_folders(root: Path, base: Path, split: str | None) -> list[Sample]:
    samples = []
    for class_dir in _class_dirs(root):
        label = class_label(class_dir.name)
        for file, problem in walk_entries(class_dir):
            # The folder is resolved, the name is not: a link is reported under its own name.
            absolute = os.path.join(os.path.realpath(file.parent), file.name)
            samples.append(Sample(absolute, file.relative_to(base).as_posix(), label, split, problem))
    return samples


def class_label(folder_name: str) -> str:
    """The label of a class folder: its name, escaped (with a warning) if it is not valid UTF-8."""
    shown = display_path(folder_name)
    if shown != folder_name:
        logger.warning("class folder name %s is not valid UTF-8 (or holds control characters): its label is %r",
                       shown, shown)
    return shown


def _from_csv(csv_path: Path) -> list[Sample]:
    base = csv_path.parent
    # surrogateescape: a path written in another encoding keeps its bytes (the file's own name).
    with open(csv_path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
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
            file = base / rel
            found = describe(file)
            absolute = os.path.join(os.path.realpath(file.parent), file.name)
            samples.append(Sample(absolute, Path(rel).as_posix(), display_path(label), split,
                                  None if found.kind == "file" else found.reason or "a folder, not a file"))
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
                f"{display_path(path)} has no class subfolders. Put each class's images in its own folder "
                f"({display_path(path)}/<class name>/image.jpg), or pass a CSV with path,label columns."
            )
        samples = _from_class_folders(path, path, None)
    return layout, samples
