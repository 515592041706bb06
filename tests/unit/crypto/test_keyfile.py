"""Key files: 32 raw bytes or 64 hex digits; created 0600 and never overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mdm.crypto import new_key, read_key_file, write_key_file
from mdm.crypto.keyfile import key_file_is_private
from mdm.errors import UsageError


def test_written_key_files_are_private_hex(tmp_path: Path) -> None:
    key, path = new_key(), tmp_path / "file.key"
    write_key_file(path, key)
    assert path.read_bytes() == key.hex().encode() + b"\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_file_is_private(path)
    assert read_key_file(path) == key


def test_existing_key_files_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "file.key"
    write_key_file(path, new_key())
    before = path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        write_key_file(path, new_key())
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "encode",
    [
        lambda k: k,
        lambda k: k.hex().encode(),
        lambda k: k.hex().upper().encode() + b"\n",
        lambda k: k.hex().encode() + b"\r\n",
    ],
    ids=["raw", "hex", "HEX-newline", "hex-crlf"],
)
def test_accepted_encodings(tmp_path: Path, encode) -> None:
    key, path = new_key(), tmp_path / "k"
    path.write_bytes(encode(key))
    assert read_key_file(path) == key


@pytest.mark.parametrize(
    "content",
    [b"", b"x" * 31, b"x" * 33, b"g" * 64, b"ab" * 32 + b"\n\n", b"ab" * 40],
    ids=["empty", "31-raw", "33-raw", "not-hex", "two-newlines", "too-long"],
)
def test_refused_contents_name_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"bad\.key holds neither"):
        read_key_file(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_key_file(tmp_path / "nope.key")


def test_group_readable_key_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(new_key())
    os.chmod(path, 0o644)
    assert not key_file_is_private(path)


def test_overwrite_replaces_a_key_file_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first, second = bytes(range(32)), bytes(range(32, 64))
    write_key_file(path, first)
    with pytest.raises(UsageError, match="already exists"):
        write_key_file(path, second)
    assert read_key_file(path) == first
    write_key_file(path, second, overwrite=True)
    assert read_key_file(path) == second
    assert path.stat().st_mode & 0o777 == 0o600
