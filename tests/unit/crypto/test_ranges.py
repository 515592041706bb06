"""Random access: offsets and derivation checked against the library's own ciphertexts."""

from __future__ import annotations

import io
import os
import random

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from mdm.crypto import RangeReader, decrypt_range, encrypt_file, new_key, verify_key
from mdm.crypto import _primitives as prim
from mdm.errors import InvalidCiphertext, UsageError
from tests.unit.crypto.sealed import CHUNK, SEALED, Sealed, flip, sealed_random


class CountingReader(io.BytesIO):
    """BytesIO that records each (offset, size) actually read, to prove what was touched."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, size: int | None = -1, /) -> bytes:
        offset = self.tell()
        data = super().read(size)
        if data:
            self.reads.append((offset, len(data)))
        return data


def edge_ranges(size: int) -> list[tuple[int, int]]:
    ranges = [(0, 0), (0, 1), (0, size), (size, 5), (size + 100, 3), (0, size + 10)]
    for boundary in range(CHUNK, size + 1, CHUNK):
        ranges += [(boundary - 1, 2), (boundary, 1), (boundary - 5, 5), (boundary - 1, CHUNK + 2)]
    if size:
        ranges += [(size - 1, 1), (size - 1, 100), (max(0, size - CHUNK - 3), CHUNK + 3)]
    return ranges


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 100, 200_003]
)
def test_ranges_match_the_plaintext(size: int) -> None:
    sealed = sealed_random(size)
    rng = random.Random(size)
    ranges = edge_ranges(size) + [
        (rng.randrange(size + 1), rng.randrange(3 * CHUNK)) for _ in range(40)
    ]
    for start, length in ranges:
        got = decrypt_range(io.BytesIO(sealed.ciphertext), sealed.key, start, length)
        assert got == sealed.plaintext[start : start + length], (start, length)


def test_chunk_offsets_and_nonces_follow_the_specification() -> None:
    """Open every chunk of a library-written object with our own derivation and offsets."""
    sealed = sealed_random(3 * CHUNK + 7)
    body = sealed.ciphertext[sealed.body :]
    keys = prim.derive(sealed.key, body[:24], sealed.header.pack())
    assert keys.commitment == body[24:56]
    for index in range(4):
        offset, length = prim.chunk_span(sealed.header.plaintext_len, index)
        assert offset == 56 + index * SEALED
        plain = keys.open_chunk(index, body[offset : offset + length])
        assert plain == sealed.plaintext[index * CHUNK : (index + 1) * CHUNK]
    assert prim.chunk_span(3 * CHUNK + 7, 3) == (56 + 3 * SEALED, 7 + 16)
    assert prim.chunk_span(2 * CHUNK, 2) == (56 + 2 * SEALED, 16)  # empty final chunk
    assert keys.nonce(5) == (keys.base_nonce ^ 5).to_bytes(12, "big")


def test_range_reads_only_the_covering_chunks() -> None:
    sealed = sealed_random(10 * CHUNK + 5)
    src = CountingReader(sealed.ciphertext)
    start, length = 4 * CHUNK + 10, CHUNK  # chunks 4 and 5
    got = decrypt_range(src, sealed.key, start, length)
    assert got == sealed.plaintext[start : start + length]
    header_and_preamble = sealed.body + 56
    body_reads = [r for r in src.reads if r[0] >= header_and_preamble]
    assert body_reads == [(sealed.chunk_offset(4), 2 * SEALED)]
    assert sum(n for _, n in src.reads) == header_and_preamble + 2 * SEALED


def test_damage_outside_the_range_is_not_seen_inside_it_is() -> None:
    sealed = sealed_random(5 * CHUNK + 5)
    damaged = flip(sealed.ciphertext, sealed.chunk_offset(3) + 7)
    assert (
        decrypt_range(io.BytesIO(damaged), sealed.key, 0, 3 * CHUNK)
        == sealed.plaintext[: 3 * CHUNK]
    )
    with pytest.raises(InvalidCiphertext):
        decrypt_range(io.BytesIO(damaged), sealed.key, 3 * CHUNK - 1, 2)


def test_a_range_touching_the_final_chunk_authenticates_it() -> None:
    sealed = sealed_random(2 * CHUNK + 50)
    damaged = flip(sealed.ciphertext, len(sealed.ciphertext) - 1)  # final chunk's tag
    assert (
        decrypt_range(io.BytesIO(damaged), sealed.key, 0, 2 * CHUNK)
        == sealed.plaintext[: 2 * CHUNK]
    )
    with pytest.raises(InvalidCiphertext):
        decrypt_range(io.BytesIO(damaged), sealed.key, 2 * CHUNK + 49, 1)


@pytest.mark.parametrize("size", [2 * CHUNK, 2 * CHUNK + 50])
def test_seek_from_end_authenticates_the_final_chunk(size: int) -> None:
    sealed = sealed_random(size)
    damaged = flip(sealed.ciphertext, len(sealed.ciphertext) - 1)
    reader = RangeReader(io.BytesIO(damaged), sealed.key)
    with pytest.raises(InvalidCiphertext):
        reader.seek(-10, os.SEEK_END)
    good = RangeReader(io.BytesIO(sealed.ciphertext), sealed.key)
    assert good.seek(-10, os.SEEK_END) == size - 10
    assert good.read() == sealed.plaintext[-10:]


def test_wrong_key_is_refused_before_any_chunk_is_read() -> None:
    sealed = sealed_random(4 * CHUNK)
    src = CountingReader(sealed.ciphertext)
    with pytest.raises(InvalidCiphertext):
        RangeReader(src, new_key())
    assert all(offset < sealed.body + 56 for offset, _ in src.reads)


def test_file_object_protocol() -> None:
    sealed = sealed_random(3 * CHUNK + 11)
    pt = sealed.plaintext
    with RangeReader(io.BytesIO(sealed.ciphertext), sealed.key) as reader:
        assert reader.readable()
        assert reader.seekable()
        assert not reader.writable()
        assert reader.size == len(pt)
        assert reader.tell() == 0
        assert reader.read(5) == pt[:5]
        assert reader.tell() == 5
        assert reader.seek(CHUNK - 2) == CHUNK - 2
        buf = bytearray(10)
        assert reader.readinto(buf) == 10
        assert bytes(buf) == pt[CHUNK - 2 : CHUNK + 8]
        assert reader.seek(-4, os.SEEK_CUR) == CHUNK + 4
        assert reader.read(3) == pt[CHUNK + 4 : CHUNK + 7]
        assert reader.seek(len(pt) + 50) == len(pt) + 50
        assert reader.read(10) == b""
        reader.seek(0)
        assert reader.read() == pt
        with pytest.raises(ValueError, match="negative"):
            reader.seek(-1)
        with pytest.raises(ValueError, match="whence"):
            reader.seek(0, 7)
    assert reader.closed
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_buffered_wrapper_and_source_closing() -> None:
    sealed = sealed_random(CHUNK + 3)
    src = io.BytesIO(sealed.ciphertext)
    with io.BufferedReader(RangeReader(src, sealed.key, close_source=True)) as buffered:
        assert buffered.read() == sealed.plaintext
    assert src.closed
    other = io.BytesIO(sealed.ciphertext)
    RangeReader(other, sealed.key).close()
    assert not other.closed


def test_invalid_ranges_are_usage_errors() -> None:
    sealed = sealed_random(10)
    with pytest.raises(UsageError):
        decrypt_range(io.BytesIO(sealed.ciphertext), sealed.key, -1, 2)
    with pytest.raises(UsageError):
        decrypt_range(io.BytesIO(sealed.ciphertext), sealed.key, 0, -2)


def test_verify_key_needs_only_the_prefix() -> None:
    sealed: Sealed = sealed_random(5 * CHUNK, k=3, n=5)
    prefix = sealed.ciphertext[: sealed.body + 56]
    assert verify_key(prefix, sealed.key) is True
    assert verify_key(prefix, new_key()) is False
    assert verify_key(flip(prefix, sealed.body + 1), sealed.key) is False
    with pytest.raises(InvalidCiphertext, match="bad magic"):
        verify_key(b"not an MDM object" * 10, sealed.key)


def test_pydicom_reads_an_encrypted_file_through_the_range_reader(
    tmp_path: os.PathLike[str],
) -> None:
    original = get_testdata_file("CT_small.dcm")
    assert original is not None
    encrypted = os.path.join(tmp_path, "ct.mdm")
    key = new_key()
    encrypt_file(original, encrypted, key)
    reference = dcmread(original)
    with open(encrypted, "rb") as f, RangeReader(f, key) as plain:
        ds = dcmread(plain)
        assert ds == reference
        assert ds.PixelData == reference.PixelData
        # Random access as pydicom uses it: deferred elements are read later by seeking.
        plain.seek(0)
        lazy = dcmread(plain, defer_size=256)
        assert lazy.PixelData == reference.PixelData


def test_verify_key_needs_the_whole_commitment() -> None:
    sealed = sealed_random(10)
    with pytest.raises(UsageError, match="header_len \\+ 56"):
        verify_key(sealed.ciphertext[: sealed.body + 55], sealed.key)


class SizeUnknown(io.BytesIO):
    """A seekable source that cannot seek from its end (like some HTTP range readers)."""

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        if whence == os.SEEK_END:
            raise io.UnsupportedOperation("size unknown")
        return super().seek(offset, whence)


def test_source_of_unknown_size_still_authenticates_every_chunk() -> None:
    sealed = sealed_random(2 * CHUNK + 9)
    with RangeReader(SizeUnknown(sealed.ciphertext), sealed.key) as reader:
        assert reader.read() == sealed.plaintext
    truncated = SizeUnknown(sealed.ciphertext[:-1])
    with RangeReader(truncated, sealed.key) as reader, pytest.raises(InvalidCiphertext):
        reader.read()
