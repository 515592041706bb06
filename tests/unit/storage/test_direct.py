"""O_DIRECT writes (``mdm.storage.direct``): exact bytes and length whatever the alignment,
nothing left behind when refused, and the cache's atomic write the same either way."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mdm.storage import direct
from mdm.workers import cache

SIZES = [0, 1, 4095, 4096, 4097, 526_000, direct.CHUNK - 1, direct.CHUNK, 2 * direct.CHUNK + 4097]
#: Filesystems that take O_DIRECT (others, e.g. tmpfs before Linux 6.6: not asserted).
DIRECT_CAPABLE = {"ext4": True, "xfs": True, "btrfs": True}


def _fs_type(path: Path) -> str:
    """The type of the filesystem holding *path*, from /proc/self/mounts (longest prefix)."""
    best, kind = "", ""
    resolved = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def _data(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.mark.parametrize("size", SIZES)
def test_the_file_holds_exactly_the_bytes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    data = _data(size)
    used = direct.write(path, data)
    expected = DIRECT_CAPABLE.get(_fs_type(tmp_path))
    if expected is not None:
        assert used is expected
    if used:
        assert path.read_bytes() == data
        assert path.stat().st_size == size
    else:
        assert not path.exists()


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        direct.write(path, _data(10_000))
    assert path.read_bytes() == b"keep"


@pytest.mark.parametrize("step", ["open", "write"])
def test_a_refusal_leaves_nothing_is_remembered_and_the_cache_writes_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """No filesystem here refuses O_DIRECT (tmpfs takes it since Linux 6.6), so the refusal
    (EINVAL from open, or from the first write on a device wanting a larger alignment) is
    the only part played by a stand-in for the kernel."""
    monkeypatch.setattr(direct, "_refused", set())
    calls = []
    real_open, real_write = os.open, os.write

    def fake_open(path: object, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            calls.append(path)
            if step == "open":
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    def fake_write(fd: int, data: object) -> int:
        if step == "write":
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(direct.os, "write", fake_write)
    assert direct.write(tmp_path / "f", _data(8192)) is False
    assert list(tmp_path.iterdir()) == []
    assert len(calls) == 1
    monkeypatch.setattr(direct.os, "write", real_write)
    sums = cache.write_atomically(tmp_path, "/dicom/a/b/c", _data(8192), direct=True)
    assert len(calls) == 1, "the refusal is remembered for this filesystem"
    assert cache.cache_path(tmp_path, "/dicom/a/b/c").read_bytes() == _data(8192)
    assert sums == cache.write_atomically(tmp_path, "/dicom/a/b/d", _data(8192))


def test_the_cache_write_gives_the_same_file_and_sums_direct_or_not(tmp_path: Path) -> None:
    data = memoryview(bytearray(_data(526_001)))
    a = cache.write_atomically(tmp_path, "/dicom/s/x/1", data, fsync=False, direct=True)
    b = cache.write_atomically(tmp_path, "/dicom/s/x/2", data, fsync=True, direct=False)
    c = cache.write_atomically(tmp_path, "/dicom/s/x/3", data, fsync=True, direct=True)
    assert a == b == c
    files = [cache.cache_path(tmp_path, f"/dicom/s/x/{i}").read_bytes() for i in (1, 2, 3)]
    assert files[0] == files[1] == files[2] == bytes(data)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".mdm-tmp")]


def test_memory_stays_one_chunk_per_thread_whatever_the_size(tmp_path: Path) -> None:
    if not direct.write(tmp_path / "probe", b"x"):
        assert DIRECT_CAPABLE.get(_fs_type(tmp_path)) is not True
        return
    direct.write(tmp_path / "big", _data(3 * direct.CHUNK + 5))
    assert len(direct._local.buffer) == direct.CHUNK
    assert (tmp_path / "big").stat().st_size == 3 * direct.CHUNK + 5
