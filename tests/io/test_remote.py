"""URI outputs keep a failed run's progress, and the re-run resumes from it (a local file:// URI)."""

from __future__ import annotations

import os

import pytest

from rayspine.io import remote
from rayspine.io.store import atomic_path


def test_a_failed_run_keeps_its_finished_parts_at_the_uri_and_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSPINE_SCRATCH", str(tmp_path / "scratch"))
    dest = tmp_path / "bucket" / "out"
    uri = f"file://{dest}"
    with pytest.raises(RuntimeError):
        with remote.local_output(uri) as out:
            (out / "parts" / "scans").mkdir(parents=True)
            (out / "parts" / "scans" / "a.parquet").write_text("scan a")
            with atomic_path(out / "parts" / "scans" / "b.parquet") as tmp:
                tmp.write_text("half of b")
                raise RuntimeError("node lost while writing b")
    # The finished part reached the destination; the half-written one did not, under any name.
    assert (dest / "parts" / "scans" / "a.parquet").read_text() == "scan a"
    assert sorted(p.name for p in (dest / "parts" / "scans").iterdir()) == ["a.parquet"]

    # A fresh staging folder (the retry runs elsewhere): the destination's parts come back.
    for stage in (tmp_path / "scratch" / "rayspine-staging").iterdir():
        for root, dirs, files in os.walk(stage, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
    with remote.local_output(uri) as out:
        assert (out / "parts" / "scans" / "a.parquet").read_text() == "scan a"  # resume sees scan a done
        (out / "parts" / "scans" / "b.parquet").write_text("scan b")
        (out / "scans.parquet").write_text("table")
    assert sorted(p.name for p in (dest / "parts" / "scans").iterdir()) == ["a.parquet", "b.parquet"]
    assert (dest / "scans.parquet").read_text() == "table"
    assert not any((tmp_path / "scratch" / "rayspine-staging").iterdir())  # staging removed after success


def test_parts_reach_the_uri_while_the_run_is_still_going(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("RAYSPINE_SCRATCH", str(tmp_path / "scratch"))
    dest = tmp_path / "bucket" / "live"
    with remote.local_output(f"file://{dest}", sync_every_s=0.1) as out:
        (out / "part.txt").write_text("done early")
        deadline = time.monotonic() + 10
        while not (dest / "part.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (dest / "part.txt").read_text() == "done early"  # a killed driver loses at most one interval


def test_sync_copies_only_new_or_newer_files(tmp_path):
    import pyarrow.fs as pafs

    local, dest = tmp_path / "local", tmp_path / "dest"
    local.mkdir()
    (local / "a.txt").write_text("a")
    fs = pafs.LocalFileSystem()
    assert remote.sync_to(local, fs, str(dest)) == 1
    assert remote.sync_to(local, fs, str(dest)) == 0  # nothing new
    (local / "b.txt").write_text("b")
    assert remote.sync_to(local, fs, str(dest)) == 1
