"""File checks are remembered between runs, and never trusted for a file that changed."""

from __future__ import annotations

import os
import sqlite3

import pytest

from conftest import make_class_folders, write_image
from transferlab.data import check_cache, validate
from transferlab.data.check_cache import CheckCache
from transferlab.data.dataset import load_dataset


@pytest.fixture
def counted_checks(monkeypatch):
    """Count the files actually decoded; stamps count as settled at once (no racy window)."""
    monkeypatch.setattr(check_cache, "RACY_SECONDS", 0.0)
    decoded: list[str] = []
    real = validate.check_file

    def counting(path):
        decoded.append(path)
        return real(path)

    monkeypatch.setattr(validate, "check_file", counting)
    return decoded


def _summary(ds):
    return [(r.rel_path, r.label, r.split, r.sha256) for r in ds.records], [(b.path, b.reason) for b in ds.bad_files]


def test_unchanged_files_are_not_decoded_again_and_give_the_same_dataset(tmp_path, counted_checks):
    data = make_class_folders(tmp_path / "data", {"a": 6, "b": 6})
    (data / "a" / "broken.jpg").write_bytes(b"not an image")
    cache = tmp_path / "cache"
    first = load_dataset(data, cache_dir=cache, show_progress=False, val_fraction=0.2, test_fraction=0.2)
    assert len(counted_checks) == 13
    counted_checks.clear()
    second = load_dataset(data, cache_dir=cache, show_progress=False, val_fraction=0.2, test_fraction=0.2)
    assert counted_checks == []
    assert _summary(second) == _summary(first)
    assert [b.path for b in second.bad_files] == [str(data / "a" / "broken.jpg")]


def test_a_changed_file_is_checked_again(tmp_path, counted_checks):
    data = make_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    cache = tmp_path / "cache"
    load_dataset(data, cache_dir=cache, show_progress=False)
    victim = sorted((data / "a").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:50])  # truncated: now a bad file
    counted_checks.clear()
    ds = load_dataset(data, cache_dir=cache, show_progress=False)
    assert counted_checks == [str(victim)]
    assert [b.path for b in ds.bad_files] == [str(victim)]


def test_replaced_file_with_same_size_and_mtime_is_checked_again(tmp_path, counted_checks):
    data = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    cache = tmp_path / "cache"
    load_dataset(data, cache_dir=cache, show_progress=False)
    victim = sorted((data / "b").iterdir())[0]
    st = os.stat(victim)
    # Same length, same modification time, different bytes: only ctime/inode betray the change.
    replacement = victim.with_suffix(".tmp")
    replacement.write_bytes(b"\0" * st.st_size)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, victim)
    counted_checks.clear()
    ds = load_dataset(data, cache_dir=cache, show_progress=False, strict=False)
    assert str(victim) in counted_checks
    assert str(victim) in [b.path for b in ds.bad_files]


def test_recently_modified_files_are_not_remembered(tmp_path, monkeypatch):
    """Within the racy window a file could change again without changing its stamp."""
    monkeypatch.setattr(check_cache, "RACY_SECONDS", 3600.0)
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2})
    cache = CheckCache(tmp_path / "cache")
    paths = [str(p) for p in sorted(data.rglob("*.png"))]
    checks = validate.check_files(paths, cache=cache, show_progress=False)
    assert all(c.ok for c in checks)
    known, stamps = cache.lookup(paths)
    assert known == {} and set(stamps) == set(paths)


def test_recheck_decodes_everything_and_a_new_checker_version_ignores_old_verdicts(tmp_path, counted_checks,
                                                                                   monkeypatch):
    data = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    cache = tmp_path / "cache"
    load_dataset(data, cache_dir=cache, show_progress=False)
    counted_checks.clear()
    load_dataset(data, cache_dir=cache, show_progress=False, recheck=True)
    assert len(counted_checks) == 6
    counted_checks.clear()
    monkeypatch.setattr(check_cache, "CHECKER_VERSION", check_cache.CHECKER_VERSION + 1)
    load_dataset(data, cache_dir=cache, show_progress=False)
    assert len(counted_checks) == 6


def test_an_unusable_cache_never_fails_a_run(tmp_path, counted_checks, caplog):
    data = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / check_cache.DB_NAME).write_bytes(b"this is not a database" * 100)
    ds = load_dataset(data, cache_dir=cache, show_progress=False)
    assert len(ds.records) == 6 and len(counted_checks) == 6
    assert "file-check cache" in caplog.text


def test_same_path_read_through_two_spellings_shares_one_entry(tmp_path, counted_checks, monkeypatch):
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2})
    cache = CheckCache(tmp_path / "cache")
    absolute = [str(p) for p in sorted(data.rglob("*.png"))]
    validate.check_files(absolute, cache=cache, show_progress=False)
    monkeypatch.chdir(tmp_path)
    relative = [os.path.relpath(p) for p in absolute]
    counted_checks.clear()
    results = validate.check_files(relative, cache=cache, show_progress=False)
    assert counted_checks == [] and [r.path for r in results] == relative
    with sqlite3.connect(cache.path) as db:
        assert db.execute("SELECT COUNT(*) FROM checks").fetchone()[0] == 4


def test_cli_inspect_recheck(tmp_path, counted_checks):
    from transferlab import cli

    data = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    write_image(data / "b" / "extra.png")
    assert cli.main(["inspect", str(data), "--json"]) == 0
    counted_checks.clear()
    assert cli.main(["inspect", str(data), "--json"]) == 0
    assert counted_checks == []
    assert cli.main(["inspect", str(data), "--json", "--recheck"]) == 0
    assert len(counted_checks) == 7
