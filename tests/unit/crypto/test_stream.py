"""Streaming encryption/decryption: round trips, exact lengths, interop with the raw library."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor

from mdm.crypto import (
    Header,
    ciphertext_length,
    decrypt_file,
    decrypt_stream,
    encrypt_again,
    encrypt_file,
    encrypt_into,
    encrypt_stream,
    new_key,
    read_header,
)
from mdm.crypto.stream import FEED_SIZE
from mdm.errors import UsageError
from tests.unit.crypto.sealed import CHUNK, sealed_random

SIZES = [0, 1, 15, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 100, 100_000]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_exact_length(size: int) -> None:
    sealed = sealed_random(size, k=3, n=5)
    assert len(sealed.ciphertext) == ciphertext_length(size) == ciphertext_length(size, 64)
    out = io.BytesIO()
    header = decrypt_stream(io.BytesIO(sealed.ciphertext), out, sealed.key)
    assert out.getvalue() == sealed.plaintext
    assert header == sealed.header


def test_round_trip_across_several_feeds() -> None:
    # 2.5 feeds, not chunk aligned: exercises the preallocated buffers between calls.
    sealed = sealed_random(FEED_SIZE * 5 // 2 + 7)
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(sealed.ciphertext), out, sealed.key)
    assert out.getvalue() == sealed.plaintext


def test_ciphertext_length_formula() -> None:
    # header + salt/commitment + plaintext + one tag per chunk, the final chunk always short.
    assert ciphertext_length(0) == 64 + 56 + 16
    assert ciphertext_length(CHUNK) == 64 + 56 + CHUNK + 2 * 16
    assert ciphertext_length(52_441_145, header_len=0) == 52_492_417  # body alone, as measured
    assert ciphertext_length(10, header_len=100) == 100 + 56 + 10 + 16
    with pytest.raises(UsageError):
        ciphertext_length(-1)


def test_body_is_plain_cobblestone_with_the_header_as_context() -> None:
    sealed = sealed_random(40_000, k=2, n=3)
    context = sealed.ciphertext[: sealed.body]
    assert context == sealed.header.pack()
    decryptor = Cobblestone256Decryptor(sealed.key, context)
    body = sealed.ciphertext[sealed.body :]
    assert decryptor.update(body) + decryptor.finalize() == sealed.plaintext


def test_reads_an_object_written_by_the_library_directly() -> None:
    key, plaintext = new_key(), os.urandom(20_000)
    header = Header.new(len(plaintext))
    encryptor = Cobblestone256Encryptor(key, header.pack())
    ciphertext = header.pack() + encryptor.update(plaintext) + encryptor.finalize()
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(ciphertext), out, key)
    assert out.getvalue() == plaintext


def test_each_encryption_draws_a_new_salt() -> None:
    key, plaintext = new_key(), b"same input"
    header = Header.new(len(plaintext))
    outputs = []
    for _ in range(2):
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(plaintext), out, key, header)
        outputs.append(out.getvalue())
    assert outputs[0][:64] == outputs[1][:64]  # same header
    assert outputs[0][64:88] != outputs[1][64:88]  # fresh 24-byte salt
    for ciphertext in outputs:
        plain = io.BytesIO()
        decrypt_stream(io.BytesIO(ciphertext), plain, key)
        assert plain.getvalue() == plaintext


class Trickle(io.RawIOBase):
    """A source that returns at most 1000 bytes per read, like a pipe or a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 1000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class ReadOnly:
    """A source with ``read`` only (no ``readinto``)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


@pytest.mark.parametrize("wrap", [Trickle, ReadOnly])
def test_short_reads_and_read_only_sources(wrap: type) -> None:
    key, plaintext = new_key(), os.urandom(3 * CHUNK + 5)
    header = Header.new(len(plaintext))
    encrypted = io.BytesIO()
    encrypt_stream(wrap(plaintext), encrypted, key, header)
    out = io.BytesIO()
    decrypt_stream(wrap(encrypted.getvalue()), out, key)
    assert out.getvalue() == plaintext


@pytest.mark.parametrize("actual", [99, 101])
def test_source_must_match_the_announced_length(actual: int) -> None:
    header = Header.new(100)
    with pytest.raises(UsageError, match="plaintext_len"):
        encrypt_stream(io.BytesIO(b"x" * actual), io.BytesIO(), new_key(), header)


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 33])
def test_keys_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        encrypt_stream(io.BytesIO(b""), io.BytesIO(), key, Header.new(0))
    with pytest.raises(UsageError, match="32 bytes"):
        decrypt_stream(io.BytesIO(b""), io.BytesIO(), key)


def test_progress_reports_every_byte_consumed() -> None:
    key, plaintext = new_key(), os.urandom(FEED_SIZE + 10)
    seen: list[int] = []
    encrypted = io.BytesIO()
    encrypt_stream(
        io.BytesIO(plaintext), encrypted, key, Header.new(len(plaintext)), progress=seen.append
    )
    assert sum(seen) == len(plaintext)
    assert len(seen) == 2
    seen.clear()
    decrypt_stream(io.BytesIO(encrypted.getvalue()), io.BytesIO(), key, progress=seen.append)
    assert sum(seen) == len(encrypted.getvalue()) - 64


def test_file_helpers_round_trip(tmp_path: Path) -> None:
    tmp = tmp_path
    src, enc, dec = tmp / "in.dcm", tmp / "in.mdm", tmp / "out.dcm"
    src.write_bytes(os.urandom(50_000))
    key = new_key()
    header = encrypt_file(src, enc, key, k=3, n=5, keyserver_set_id=4)
    with enc.open("rb") as f:
        assert read_header(f) == header
    assert (header.plaintext_len, header.k, header.n, header.keyserver_set_id) == (50_000, 3, 5, 4)
    assert enc.stat().st_size == ciphertext_length(50_000)
    assert decrypt_file(enc, dec, key) == header
    assert dec.read_bytes() == src.read_bytes()
    assert oct(dec.stat().st_mode & 0o777) == oct(0o600)  # decrypted data is patient data
    assert sorted(p.name for p in tmp.iterdir()) == ["in.dcm", "in.mdm", "out.dcm"]


@pytest.mark.parametrize("size", SIZES)
def test_encrypt_into_a_reused_buffer_gives_a_valid_object_of_the_exact_length(size: int) -> None:
    buffer = bytearray(ciphertext_length(size) + CHUNK + 16)
    for _ in range(2):  # the second object overwrites the first in the same buffer
        plaintext, key = os.urandom(size), new_key()
        header = Header.new(size, k=3, n=5)
        n = encrypt_into(plaintext, key, header, buffer)
        assert n == ciphertext_length(size)
        out = io.BytesIO()
        assert decrypt_stream(io.BytesIO(bytes(buffer[:n])), out, key) == header
        assert out.getvalue() == plaintext


def test_encrypt_into_refuses_a_wrong_length_or_a_small_buffer() -> None:
    header = Header.new(100, k=3, n=5)
    with pytest.raises(UsageError, match="plaintext_len=100"):
        encrypt_into(b"x" * 99, new_key(), header, bytearray(1 << 16))
    with pytest.raises(UsageError, match="output buffer needs"):
        encrypt_into(b"x" * 100, new_key(), header, bytearray(ciphertext_length(100)))


@pytest.mark.parametrize("size", SIZES)
def test_encrypt_again_rebuilds_the_library_s_object_from_its_salt(size: int) -> None:
    plaintext, key = os.urandom(size), new_key()
    header = Header.new(size, k=3, n=5)
    first = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), first, key, header)
    context = header.pack()
    salt = first.getvalue()[len(context) : len(context) + 24]
    out = memoryview(bytearray(ciphertext_length(size)))
    assert encrypt_again(plaintext, key, context, salt, out) == len(out)
    assert bytes(out) == first.getvalue()
    encrypt_again(plaintext, new_key(), context, salt, out)
    assert bytes(out) != first.getvalue()
    with pytest.raises(UsageError, match="output buffer"):
        encrypt_again(plaintext, key, context, salt, out[:-1])
