"""Known-answer vectors (tests/data/vectors/format_v1.json) pin format v1 for good.

The file was generated once by make_vectors.py with cryptography's Cobblestone-256 and is never
regenerated: if this test fails, this release can no longer read files already written, which
the versioning promise in docs/format.md forbids. Cobblestone draws a random salt, so the check
is decryption of the committed bytes, not re-encryption to the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from mdm.crypto import (
    Header,
    RangeReader,
    ciphertext_length,
    decrypt_range,
    decrypt_stream,
    encrypt_stream,
    read_header,
)
from mdm.crypto import _primitives as prim
from mdm.errors import InvalidCiphertext, UnsupportedFormat

VECTORS = json.loads(
    (Path(__file__).parents[2] / "data" / "vectors" / "format_v1.json").read_text()
)
KEY = bytes.fromhex(VECTORS["key_hex"])


def pattern(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


def header_of(fields: dict[str, Any]) -> Header:
    return Header(
        key_id=uuid.UUID(fields["key_id"]),
        file_guid=uuid.UUID(fields["file_guid"]),
        plaintext_len=fields["plaintext_len"],
        share_scheme=fields["share_scheme"],
        k=fields["k"],
        n=fields["n"],
        keyserver_set_id=fields["keyserver_set_id"],
        tlvs=tuple((t, bytes.fromhex(v)) for t, v in fields["tlvs"]),
        version=fields["version"],
        alg=fields["alg"],
        flags=fields["flags"],
    )


def test_the_vectors_cover_the_chunk_edges() -> None:
    sizes = {v["plaintext"]["length"] for v in VECTORS["vectors"]}
    assert {0, 1, 16384, 16385} <= sizes


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vector_decrypts_to_the_committed_plaintext_and_header(vector: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(vector["ciphertext_hex"])
    expected_header = header_of(vector["header"])
    plaintext = pattern(vector["plaintext"]["length"])
    assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext"]["sha256"]

    assert expected_header.pack().hex() == vector["header_hex"]
    assert expected_header.header_len == vector["header"]["header_len"]
    assert ciphertext.startswith(bytes.fromhex(vector["header_hex"]))
    assert read_header(io.BytesIO(ciphertext)) == expected_header
    assert len(ciphertext) == vector["ciphertext_len"]
    assert len(ciphertext) == ciphertext_length(len(plaintext), expected_header.header_len)

    out = io.BytesIO()
    assert decrypt_stream(io.BytesIO(ciphertext), out, KEY) == expected_header
    assert out.getvalue() == plaintext


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vector_derivation_and_random_access(vector: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(vector["ciphertext_hex"])
    header = header_of(vector["header"])
    body = ciphertext[header.header_len :]
    derived = vector["derived"]
    assert body[:24].hex() == derived["salt_hex"]
    assert body[24:56].hex() == derived["commitment_hex"]
    keys = prim.derive(KEY, body[:24], header.pack())
    assert keys.commitment.hex() == derived["commitment_hex"]
    assert keys.base_nonce.to_bytes(12, "big").hex() == derived["base_nonce_hex"]

    plaintext = pattern(header.plaintext_len)
    size = len(plaintext)
    for start, length in [(0, 1), (size - 1, 1), (16380, 10), (0, size), (size // 2, 3)]:
        start = max(start, 0)
        got = decrypt_range(io.BytesIO(ciphertext), KEY, start, length)
        assert got == plaintext[start : start + length]
    with RangeReader(io.BytesIO(ciphertext), KEY) as reader:
        assert reader.read() == plaintext


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_re_encryption_differs_but_is_valid(vector: dict[str, Any]) -> None:
    header = header_of(vector["header"])
    plaintext = pattern(header.plaintext_len)
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), out, KEY, header)
    fresh = out.getvalue()
    assert fresh != bytes.fromhex(vector["ciphertext_hex"])  # new salt
    assert fresh[: header.header_len].hex() == vector["header_hex"]
    decrypted = io.BytesIO()
    decrypt_stream(io.BytesIO(fresh), decrypted, KEY)
    assert decrypted.getvalue() == plaintext


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors_are_refused(vector: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(vector["ciphertext_hex"])
    assert vector["read_header_error"] == "UnsupportedFormat"
    assert vector["decrypt_error"] == "InvalidCiphertext"
    with pytest.raises(UnsupportedFormat):
        read_header(io.BytesIO(ciphertext))
    with pytest.raises(InvalidCiphertext) as excinfo:
        decrypt_stream(io.BytesIO(ciphertext), io.BytesIO(), KEY)
    assert isinstance(excinfo.value.__cause__, UnsupportedFormat)
