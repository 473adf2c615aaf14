"""Folders as they come off network shares and old archives: links that loop or point nowhere,
named pipes, sockets, device files and names that are not UTF-8. Nothing hangs (every CLI call
runs under a timeout), nothing crashes, every such entry is reported under its own path."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_class_folders, rgb_array, write_image
from transferlab.data import load_dataset
from transferlab.data.files import UnreadableFileError, describe, display_path, read_regular_file
from transferlab.data.sources import walk_entries

CLI = [sys.executable, "-c", "from transferlab.cli import main; raise SystemExit(main())"]
TIMEOUT = 120  # seconds; the FIFO used to block `inspect` forever
LATIN1_NAME = "caf\xe9.png".encode("latin-1")  # b"caf\xe9.png": not valid UTF-8
LATIN1_CLASS = "r\xe9sum\xe9".encode("latin-1")


def cli(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, timeout=timeout)  # bytes: nothing decoded for us
    assert b"Traceback" not in proc.stderr, proc.stderr.decode("utf-8", "replace")
    return proc


def hostile_folder(root: Path) -> dict[str, str]:
    """Two good classes plus one of each trap; returns {entry path relative to root: expected reason word}."""
    make_class_folders(root, {"ants": 4, "bees": 4})
    ants, bees = root / "ants", root / "bees"
    (ants / "loop_a.jpg").symlink_to("loop_b.jpg")
    (ants / "loop_b.jpg").symlink_to("loop_a.jpg")
    (ants / "dangling.jpg").symlink_to("gone_forever.jpg")
    os.mkfifo(ants / "pipe.jpg")
    (ants / "sub").mkdir()
    (ants / "sub" / "up").symlink_to("..", target_is_directory=True)  # a folder loop
    write_image(ants / "sub" / "deep.png", rgb_array(32, 32, seed=900))
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(bees / "sock.png"))
    server.close()  # the socket file stays
    expected = {"ants/loop_a.jpg": "loop", "ants/loop_b.jpg": "loop", "ants/dangling.jpg": "dangling",
                "ants/pipe.jpg": "named pipe", "ants/sub/up": "loop", "bees/sock.png": "socket"}
    try:
        os.mknod(bees / "null.png", stat.S_IFCHR | 0o644, os.makedev(1, 3))  # like /dev/null
        expected["bees/null.png"] = "character device"
    except PermissionError:
        pass  # not root: the other special files still cover the case
    # Undecodable names: a good image with a Latin-1 name, and a whole class folder named so.
    write_image(Path(os.fsdecode(os.fsencode(bees) + b"/" + LATIN1_NAME)), rgb_array(32, 32, seed=901))
    return expected


def _write_latin1_class(root: Path) -> str:
    folder = os.fsencode(root) + b"/" + LATIN1_CLASS
    for i in range(2):
        write_image(Path(os.fsdecode(folder + f"/img{i}.png".encode())), rgb_array(32, 32, seed=500 + i))
    return display_path(os.fsdecode(LATIN1_CLASS))


def test_describe_never_opens_and_names_each_kind(tmp_path):
    expected = hostile_folder(tmp_path)
    for rel, word in expected.items():
        found = describe(tmp_path / rel)
        if rel.endswith("up"):
            assert found.kind == "dir"  # a loop only as seen from the walk
            continue
        assert found.kind == "bad" and word in found.reason, (rel, found)
        with pytest.raises(UnreadableFileError, match=word):
            read_regular_file(tmp_path / rel)  # returns at once: a FIFO is never opened
    assert display_path(os.fsdecode(b"/x/caf\xe9.png")) == "/x/caf\\xe9.png"
    assert display_path("tab\there") == "tab\\there"


def test_walk_finishes_and_reports_links_under_their_own_names(tmp_path):
    expected = hostile_folder(tmp_path)
    entries = {p.relative_to(tmp_path).as_posix(): problem for p, problem in walk_entries(tmp_path)}
    for rel, word in expected.items():
        assert word in (entries[rel] or ""), (rel, entries.get(rel))
    assert entries["ants/sub/deep.png"] is None  # the folder behind the loop was walked once
    assert not any("sub/up/" in rel for rel in entries)
    assert entries["bees/" + os.fsdecode(LATIN1_NAME)] is None  # surrogate-escaped: bytes kept


def test_load_dataset_keeps_the_undecodable_file_and_reports_the_rest(tmp_path):
    expected = hostile_folder(tmp_path)
    label = _write_latin1_class(tmp_path)
    ds = load_dataset(tmp_path, show_progress=False, strict=False)
    bad = {Path(b.path).relative_to(tmp_path).as_posix(): b.reason for b in ds.bad_files}
    assert set(bad) == set(expected)
    assert all(word in bad[rel] for rel, word in expected.items())
    assert ds.class_names == sorted(["ants", "bees", label]) and label == "r\\xe9sum\\xe9"
    latin = [r for r in ds.records if r.path.endswith(os.fsdecode(LATIN1_NAME))]
    assert len(latin) == 1 and os.path.exists(latin[0].path)  # bytes kept: it opens
    assert ds.counts() == {"ants": 5, "bees": 5, label: 2}
    ds.write_splits(tmp_path.parent / "splits.csv")  # written escaped, no UnicodeEncodeError
    assert "caf\\xe9.png" in (tmp_path.parent / "splits.csv").read_text(encoding="utf-8")


def test_cli_inspect_does_not_hang_and_lists_every_trap(tmp_path):
    data = tmp_path / "data"
    expected = hostile_folder(data)
    _write_latin1_class(data)
    proc = cli("inspect", str(data), "--json", "--bad-files-out", str(tmp_path / "bad.txt"))
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    report = json.loads(proc.stdout.decode("utf-8"))  # valid UTF-8 JSON
    prefix = display_path(data) + "/"
    bad = {b["path"].removeprefix(prefix): b["reason"] for b in report["bad_files"]}
    assert set(bad) == set(expected)
    assert report["classes"]["bees"] == 5 and report["total"] == 12
    listing = (tmp_path / "bad.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split("\t")[0].removeprefix(prefix) for line in listing) == sorted(expected)
    text = cli("inspect", str(data)).stdout.decode("utf-8")
    assert "dangling.jpg: dangling symbolic link (its target gone_forever.jpg does not exist)" in text
    assert "pipe.jpg: named pipe (FIFO)" in text


def test_cli_predict_reports_traps_and_reads_undecodable_names(tmp_path):
    from helpers import save_tiny_cnn

    data = tmp_path / "data"
    expected = hostile_folder(data)
    model = save_tiny_cnn(tmp_path / "tiny.keras", num_classes=2)
    (tmp_path / "labels.txt").write_text("ants\nbees\n", encoding="utf-8")
    proc = cli("predict", str(model), str(data), "--format", "csv")
    rows = proc.stdout.decode("utf-8").splitlines()[1:]
    assert proc.returncode == 1  # some files could not be read
    by_path = {row.split(",")[0].removeprefix(display_path(data) + "/"): row for row in rows}
    for rel, word in expected.items():
        assert word in by_path[rel], by_path.get(rel)
    assert by_path["bees/caf\\xe9.png"].split(",")[1] in ("ants", "bees")  # read through its bytes
    assert by_path["ants/sub/deep.png"].split(",")[1] in ("ants", "bees")
    # Named directly, a FIFO is reported, not opened.
    direct = cli("predict", str(model), str(data / "ants" / "pipe.jpg"), "--format", "json")
    assert "named pipe" in json.loads(direct.stdout)[0]["error"]


def test_csv_dataset_with_latin1_paths_and_special_files(tmp_path):
    expected = hostile_folder(tmp_path / "imgs")
    lines = [b"path,label"]
    for rel in ("ants/ants_0000.png", "ants/ants_0001.png", "bees/bees_0000.png", "ants/pipe.jpg",
                "ants/dangling.jpg"):
        lines.append(f"imgs/{rel},{rel.split('/')[0]}".encode())
    lines.append(b"imgs/bees/" + LATIN1_NAME + b",bees")  # a CSV written by a Latin-1 tool
    (tmp_path / "labels.csv").write_bytes(b"\n".join(lines) + b"\n")
    ds = load_dataset(tmp_path / "labels.csv", show_progress=False, strict=False)
    assert len(ds.records) == 4 and expected
    assert {Path(b.path).name: b.reason.split(" ")[0] for b in ds.bad_files} == {"pipe.jpg": "named",
                                                                                  "dangling.jpg": "dangling"}
