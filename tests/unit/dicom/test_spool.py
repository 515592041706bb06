"""Spool directories of the dcmtk engine: where they go by default, and the sweep of those a
dead process left (the spools in use are tested with the real getscu in
tests/integration/test_pacs_getscu.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mdm.dicom import spool


def test_the_default_spool_is_the_tmpfs_when_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    monkeypatch.setattr(spool, "SHM_MIN_FREE", free // 2)
    assert spool.default_root(str(shm)) == str(shm)
    monkeypatch.setattr(spool, "SHM_MIN_FREE", free * 2)
    assert spool.default_root(str(shm)) == tempfile.gettempdir(), "too small: temp dir"
    missing = tmp_path / "no-shm"
    assert spool.default_root(str(missing)) == tempfile.gettempdir()


def test_spools_left_by_dead_workers_are_swept_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f"mdm-getscu-{dead.pid}-k2j4"
    (left / "sub").mkdir(parents=True)
    (left / "CT.1.2.3").write_bytes(b"original")
    mine = tmp_path / f"mdm-getscu-{os.getpid()}-a1b2"
    mine.mkdir()
    not_a_spool = tmp_path / "mdm-getscu-notapid"
    not_a_spool.mkdir()
    a_file = tmp_path / f"mdm-getscu-{dead.pid}-file"
    a_file.write_bytes(b"")
    monkeypatch.setattr(spool, "_swept", set())
    assert spool.sweep(str(tmp_path)) == [left.name]
    assert not left.exists()
    assert mine.is_dir() and not_a_spool.is_dir() and a_file.is_file()  # noqa: PT018
    left.mkdir()
    assert spool.sweep(str(tmp_path)) == [], "once per root and process"
    assert left.is_dir()


def test_a_new_spool_is_private_and_named_after_its_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_swept", set())
    made = spool.new_spool(str(tmp_path))
    assert made.parent == tmp_path
    assert made.name.startswith(f"mdm-getscu-{os.getpid()}-")
    assert made.stat().st_mode & 0o777 == 0o700
    assert str(tmp_path) in spool._swept, "its root was swept first"
