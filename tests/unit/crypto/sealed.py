"""Helpers for the encrypted-file format tests: encrypted objects built on demand."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

from mdm.crypto import Header, encrypt_stream, new_key

CHUNK = 16384
SEALED = CHUNK + 16


@dataclass(frozen=True)
class Sealed:
    """An encrypted object and what went into it."""

    key: bytes
    header: Header
    plaintext: bytes
    ciphertext: bytes

    @property
    def body(self) -> int:
        """Offset of the Cobblestone body (salt) in the ciphertext."""
        return self.header.header_len

    def chunk_offset(self, index: int) -> int:
        return self.body + 56 + index * SEALED


def seal(plaintext: bytes, key: bytes | None = None, **fields: object) -> Sealed:
    key = key or new_key()
    header = Header.new(len(plaintext), **fields)  # type: ignore[arg-type]
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), out, key, header)
    return Sealed(key, header, plaintext, out.getvalue())


def sealed_random(size: int, **fields: object) -> Sealed:
    """Random plaintext of *size* bytes, encrypted under a new key."""
    return seal(os.urandom(size), **fields)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    """*data* with one bit flipped."""
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1 :]
