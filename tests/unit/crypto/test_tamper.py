"""One error for every failure: each damage raises InvalidCiphertext and releases nothing.

Every damage is tried through each way of decrypting (stream, file, range reader), because
each has its own path to the same guarantee. "Releases nothing" means: the file helper leaves
no file at all; the stream writes at most whole chunks that verified and that are a true prefix
of the plaintext (the documented truncation caveat), and nothing at all when the key, the
header or the salt/commitment is wrong.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.cobblestone import Cobblestone256Encryptor

from mdm.crypto import Header, RangeReader, decrypt_file, decrypt_range, decrypt_stream, new_key
from mdm.errors import InvalidCiphertext
from tests.unit.crypto.sealed import CHUNK, SEALED, Sealed, flip, seal, sealed_random

# Three full chunks and a short final one.
SIZE = 3 * CHUNK + 100
OBJECT = sealed_random(SIZE, k=3, n=5)


def swap(s: Sealed, a: int, b: int) -> bytes:
    ct = s.ciphertext
    oa, ob = s.chunk_offset(a), s.chunk_offset(b)
    chunk_a, chunk_b = ct[oa : oa + SEALED], ct[ob : ob + SEALED]
    out = bytearray(ct)
    out[oa : oa + SEALED] = chunk_b
    out[ob : ob + SEALED] = chunk_a
    return bytes(out)


def with_header(s: Sealed, **changes: object) -> bytes:
    header = dataclasses.replace(s.header, **changes)  # type: ignore[arg-type]
    return header.pack() + s.ciphertext[s.body :]


def transplanted_header(s: Sealed) -> bytes:
    """The body of s behind the header of another object encrypted with the same key."""
    other = seal(b"y" * SIZE, s.key)
    return other.ciphertext[: other.body] + s.ciphertext[s.body :]


# name -> (damage, early): "early" damages must release no plaintext even from the stream.
Damage = Callable[[Sealed], bytes]
DAMAGES: dict[str, tuple[Damage, bool]] = {
    "empty-file": (lambda s: b"", True),
    "cut-inside-header": (lambda s: s.ciphertext[:30], True),
    "cut-after-header": (lambda s: s.ciphertext[: s.body], True),
    "cut-inside-salt": (lambda s: s.ciphertext[: s.body + 10], True),
    "cut-after-commitment": (lambda s: s.ciphertext[: s.body + 56], False),
    "cut-after-chunk-0": (lambda s: s.ciphertext[: s.chunk_offset(1)], False),
    "cut-after-chunk-2": (lambda s: s.ciphertext[: s.chunk_offset(3)], False),
    "cut-inside-chunk-1": (lambda s: s.ciphertext[: s.chunk_offset(1) + 500], False),
    "drop-last-byte": (lambda s: s.ciphertext[:-1], False),
    "drop-final-tag": (lambda s: s.ciphertext[:-16], False),
    "append-one-byte": (lambda s: s.ciphertext + b"\x00", False),
    "append-sixteen-bytes": (lambda s: s.ciphertext + bytes(16), False),
    "append-final-chunk-again": (lambda s: s.ciphertext + s.ciphertext[s.chunk_offset(3) :], False),
    "swap-chunks-0-1": (lambda s: swap(s, 0, 1), False),
    "swap-chunks-1-2": (lambda s: swap(s, 1, 2), False),
    "flip-salt": (lambda s: flip(s.ciphertext, s.body + 3), True),
    "flip-commitment": (lambda s: flip(s.ciphertext, s.body + 40, 7), True),
    "flip-chunk-0": (lambda s: flip(s.ciphertext, s.chunk_offset(0)), False),
    "flip-chunk-1-tag": (lambda s: flip(s.ciphertext, s.chunk_offset(2) - 1), False),
    "flip-final-chunk": (lambda s: flip(s.ciphertext, len(s.ciphertext) - 20), False),
    "flip-last-byte": (lambda s: flip(s.ciphertext, len(s.ciphertext) - 1), False),
    "header-other-guid": (lambda s: with_header(s, file_guid=uuid.uuid4()), True),
    "header-other-key-id": (lambda s: with_header(s, key_id=uuid.uuid4()), True),
    "header-length-plus-one": (lambda s: with_header(s, plaintext_len=SIZE + 1), True),
    "header-length-minus-one": (lambda s: with_header(s, plaintext_len=SIZE - 1), True),
    "header-other-k": (lambda s: with_header(s, k=2), True),
    "header-other-keyserver-set": (lambda s: with_header(s, keyserver_set_id=9), True),
    "header-added-tlv": (lambda s: with_header(s, tlvs=((1, b"x"),)), True),
    "header-from-another-object": (transplanted_header, True),
}


def _check_error(excinfo: pytest.ExceptionInfo[InvalidCiphertext]) -> None:
    assert type(excinfo.value) is InvalidCiphertext
    assert excinfo.value.__cause__ is not None, "the cause must be chained for debugging"


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_stream_raises_and_releases_only_verified_chunks(name: str) -> None:
    damage, early = DAMAGES[name]
    out = io.BytesIO()
    with pytest.raises(InvalidCiphertext) as excinfo:
        decrypt_stream(io.BytesIO(damage(OBJECT)), out, OBJECT.key)
    _check_error(excinfo)
    released = out.getvalue()
    assert len(released) % CHUNK == 0
    assert OBJECT.plaintext.startswith(released)
    if early:
        assert released == b""


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_decrypt_file_leaves_no_file(name: str, tmp_path: Path) -> None:
    damage, _ = DAMAGES[name]
    src, dst = tmp_path / "in.mdm", tmp_path / "out.dcm"
    src.write_bytes(damage(OBJECT))
    with pytest.raises(InvalidCiphertext) as excinfo:
        decrypt_file(src, dst, OBJECT.key)
    _check_error(excinfo)
    assert [p.name for p in tmp_path.iterdir()] == ["in.mdm"]


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_range_reader_raises_before_returning_damaged_bytes(name: str) -> None:
    damage, _ = DAMAGES[name]
    with pytest.raises(InvalidCiphertext) as excinfo:  # noqa: PT012 - open, then read
        reader = RangeReader(io.BytesIO(damage(OBJECT)), OBJECT.key)
        reader.read()
    _check_error(excinfo)
    with pytest.raises(InvalidCiphertext):
        decrypt_range(io.BytesIO(damage(OBJECT)), OBJECT.key, 0, SIZE)


def test_wrong_key_everywhere(tmp_path: Path) -> None:
    wrong = new_key()
    out = io.BytesIO()
    with pytest.raises(InvalidCiphertext) as excinfo:
        decrypt_stream(io.BytesIO(OBJECT.ciphertext), out, wrong)
    _check_error(excinfo)
    assert out.getvalue() == b""
    (tmp_path / "in.mdm").write_bytes(OBJECT.ciphertext)
    with pytest.raises(InvalidCiphertext):
        decrypt_file(tmp_path / "in.mdm", tmp_path / "out", wrong)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidCiphertext) as excinfo:
        RangeReader(io.BytesIO(OBJECT.ciphertext), wrong)
    _check_error(excinfo)


def test_every_header_bit_matters() -> None:
    """Flip each of the 512 header bits: every decryption path refuses, none releases data."""
    small = sealed_random(100, k=3, n=5)
    for offset in range(small.body):
        for bit in range(8):
            damaged = flip(small.ciphertext, offset, bit)
            out = io.BytesIO()
            with pytest.raises(InvalidCiphertext):
                decrypt_stream(io.BytesIO(damaged), out, small.key)
            assert out.getvalue() == b"", (offset, bit)
            with pytest.raises(InvalidCiphertext):
                RangeReader(io.BytesIO(damaged), small.key)


def test_header_lying_about_the_length_is_refused_even_with_the_key() -> None:
    """A key holder who writes a header whose plaintext_len is wrong still gets no file."""
    key = new_key()
    header = Header.new(10)
    encryptor = Cobblestone256Encryptor(key, header.pack())
    lying = header.pack() + encryptor.update(b"x" * 11) + encryptor.finalize()
    out = io.BytesIO()
    with pytest.raises(InvalidCiphertext) as excinfo:
        decrypt_stream(io.BytesIO(lying), out, key)
    _check_error(excinfo)
    with pytest.raises(InvalidCiphertext):
        RangeReader(io.BytesIO(lying), key)
