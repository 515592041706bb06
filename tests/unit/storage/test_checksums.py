"""Checksums as the grid spells them, and the narrowed set the recall worker records."""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from pathlib import Path

import pytest

from mdm.storage.checksums import ChecksumMemo, Checksummer, file_checksums

DATA = bytes(range(256)) * 5000


def test_all_three_in_one_pass_match_the_reference_implementations() -> None:
    sums = file_checksums(io.BytesIO(DATA))
    assert sums == {
        "adler32": f"{zlib.adler32(DATA):08x}",
        "md5": hashlib.md5(DATA, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(DATA).hexdigest(),
    }


def test_a_narrowed_set_gives_only_those_and_the_same_values() -> None:
    c = Checksummer(("adler32", "sha256"))
    view = memoryview(DATA)
    for i in range(0, len(DATA), 70_000):  # fed in pieces, from a memoryview
        c.update(view[i : i + 70_000])
    full = file_checksums(io.BytesIO(DATA))
    assert c.hexdigests() == {"adler32": full["adler32"], "sha256": full["sha256"]}
    assert c.size == len(DATA)


def test_adler32_is_zero_padded_lower_case() -> None:
    assert Checksummer(("adler32",)).hexdigests() == {"adler32": "00000001"}


def test_an_unknown_algorithm_is_named() -> None:
    with pytest.raises(ValueError, match="crc32c"):
        Checksummer(("adler32", "crc32c"))


def test_the_memo_reads_a_file_once_per_version_and_stays_bounded(tmp_path: Path) -> None:
    """``ChecksumMemo``: a copy is read once while it is the same file; a new version (new
    inode or mtime) is read again; past its limit the least recently used LFN is forgotten."""
    memo = ChecksumMemo(limit=2)
    paths = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, path in paths.items():
        path.write_bytes(name.encode() * 1000)
    with paths["a"].open("rb") as fh:
        first = memo.of("/a", fh)
    assert first == file_checksums(io.BytesIO(b"a" * 1000))
    with paths["a"].open("rb") as fh:
        fh.seek(0, io.SEEK_END)  # nothing left to read: only a remembered value can answer
        assert memo.of("/a", fh) == first
    replaced = tmp_path / "a.new"
    replaced.write_bytes(b"z" * 1000)
    os.replace(replaced, paths["a"])  # another inode: another version
    with paths["a"].open("rb") as fh:
        assert memo.of("/a", fh, compute=False) == {}
        assert memo.of("/a", fh)["sha256"] == hashlib.sha256(b"z" * 1000).hexdigest()
    for name in ("b", "c"):
        with paths[name].open("rb") as fh:
            memo.of(f"/{name}", fh)
    assert len(memo) == 2
    with paths["a"].open("rb") as fh:
        assert memo.of("/a", fh, compute=False) == {}, "the least recently used went first"
    with paths["c"].open("rb") as fh:
        assert (
            memo.of("/c", fh, compute=False)["md5"]
            == hashlib.md5(b"c" * 1000, usedforsecurity=False).hexdigest()
        )
    memo.forget("/c")
    with paths["c"].open("rb") as fh:
        assert memo.of("/c", fh, compute=False) == {}
