"""HAZMAT: the C2SP chunked-encryption v1 building blocks, for ``mdm.crypto.ranges`` only.

.. warning::

   This module is "hazardous materials" in the sense of ``cryptography.hazmat``: it hands out a
   per-message AES-256-GCM key and base nonce. Used outside the format code it makes nonce
   reuse, missing commitment checks and unauthenticated truncation easy. Use the recipe API in
   :mod:`mdm.crypto` (``encrypt_stream``, ``decrypt_stream``, ``decrypt_range``,
   ``RangeReader``) instead. It encrypts only for ``stream.encrypt_again`` (the recall's
   replay of a recorded salt, which the library cannot be given); every first encryption is
   left to ``cryptography.cobblestone``.

Why it exists: ``cryptography`` 50 implements Cobblestone-256 streaming but not random access
(pyca/cryptography PR #15322, ``decrypt_range``, is still open). Random access needs the same
derivation the library performs, reproduced here from the specification
(https://c2sp.org/chunked-encryption, "Key derivation" and "AEAD usage")::

    key || base_nonce || commitment = HKDF-Expand-SHA-512(prk = input key,
        info = "c2sp.org/chunked-encryption@v1+" || "AEAD_AES_256_GCM" || 0x00 || salt || context)
    nonce(i) = base_nonce XOR I2OSP(i, 12)          # chunk counter, big-endian, i < 2^38
    AAD = empty

HKDF-Expand without Extract follows RFC 5869 section 2.3 (the input key is already uniform).
The unit tests check every value against the library's own ciphertexts.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
SALT_LEN = 24
COMMITMENT_LEN = 32
#: salt || commitment, before chunk 0.
PREAMBLE_LEN = SALT_LEN + COMMITMENT_LEN
CHUNK_LEN = 16384
CHUNK_CT_LEN = CHUNK_LEN + TAG_LEN
MAX_CHUNKS = 1 << 38
_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00"


@dataclass(frozen=True, repr=False)
class MessageKeys:
    """The per-message values derived from (input key, salt, context). Never log or repr them."""

    aead: AESGCM
    base_nonce: int
    commitment: bytes

    def nonce(self, index: int) -> bytes:
        """The nonce of chunk *index* (base nonce XOR the big-endian counter)."""
        if not 0 <= index < MAX_CHUNKS:
            raise ValueError(f"chunk index {index} outside 0..2^38-1")
        return (self.base_nonce ^ index).to_bytes(NONCE_LEN, "big")

    def seal_chunk(self, index: int, plain: bytes | memoryview) -> bytes:
        """Encrypt chunk *index* (only ``stream.encrypt_again`` may: see the module warning)."""
        return self.aead.encrypt(self.nonce(index), plain, None)

    def open_chunk(self, index: int, sealed: bytes | memoryview) -> bytes:
        """Decrypt and authenticate chunk *index*; raises ``cryptography`` ``InvalidTag``."""
        return self.aead.decrypt(self.nonce(index), sealed, None)


def derive(key: bytes, salt: bytes, context: bytes) -> MessageKeys:
    """Run the C2SP HKDF-Expand for Cobblestone-256 (AES-256-GCM, SHA-512)."""
    if len(key) != KEY_LEN or len(salt) != SALT_LEN:
        raise ValueError("Cobblestone-256 needs a 32-byte key and a 24-byte salt")
    okm = HKDFExpand(
        algorithm=hashes.SHA512(),
        length=KEY_LEN + NONCE_LEN + COMMITMENT_LEN,
        info=_INFO_PREFIX + salt + context,
    ).derive(key)
    return MessageKeys(
        aead=AESGCM(okm[:KEY_LEN]),
        base_nonce=int.from_bytes(okm[KEY_LEN : KEY_LEN + NONCE_LEN], "big"),
        commitment=okm[KEY_LEN + NONCE_LEN :],
    )


def commitment_matches(keys: MessageKeys, stored: bytes) -> bool:
    """Compare the stored and derived commitments in constant time."""
    return hmac.compare_digest(keys.commitment, stored)


def chunk_count(plaintext_len: int) -> int:
    """Chunks in a message: the final one is always shorter than 16 KiB, possibly empty."""
    return plaintext_len // CHUNK_LEN + 1


def body_length(plaintext_len: int) -> int:
    """Bytes of the Cobblestone body (salt, commitment, sealed chunks) for a plaintext."""
    return PREAMBLE_LEN + plaintext_len + TAG_LEN * chunk_count(plaintext_len)


def chunk_span(plaintext_len: int, index: int) -> tuple[int, int]:
    """(offset in the body, sealed length) of chunk *index*."""
    last = plaintext_len // CHUNK_LEN
    if not 0 <= index <= last:
        raise ValueError(f"chunk {index} outside 0..{last}")
    size = CHUNK_CT_LEN if index < last else plaintext_len % CHUNK_LEN + TAG_LEN
    return PREAMBLE_LEN + index * CHUNK_CT_LEN, size
