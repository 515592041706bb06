"""The MDM encrypted-file format: the recipe layer everyone uses.

An encrypted object is a small MDM header (magic, version, algorithm, key id, GUID, plaintext
length, how the key is split) followed by a C2SP chunked-encryption body, Cobblestone-256
(AES-256-GCM, 16 KiB chunks, HKDF-SHA-512, key commitment), with the whole header as the
``context``. docs/format.md is the specification.

::

    key = new_key()
    header = Header.new(len(data), k=3, n=5)
    encrypt_stream(src, dst, key, header)          # or encrypt_file(path, out, key, k=3, n=5)
    decrypt_stream(src, dst, key)                  # or decrypt_file(path, out, key)
    decrypt_range(src, key, start, length)         # only the chunks that range covers
    dcmread(RangeReader(src, key))                 # a seekable plaintext file object

Every decryption failure, whatever its cause, is :class:`mdm.errors.InvalidCiphertext`, and no
unauthenticated plaintext is ever released. The HKDF/AES-GCM building blocks that random access
needs live in the private ``_primitives`` module, which nothing outside this package may use.
"""

from __future__ import annotations

from mdm.crypto.format import (
    ALG_COBBLESTONE_256,
    FORMAT_VERSION,
    MAGIC,
    SCHEME_NONE,
    SCHEME_SHAMIR_GF256,
    Header,
    read_header,
)
from mdm.crypto.keyfile import read_key_file, write_key_file
from mdm.crypto.ranges import RangeReader, decrypt_range, verify_key
from mdm.crypto.stream import (
    ciphertext_length,
    decrypt_file,
    decrypt_stream,
    encrypt_again,
    encrypt_file,
    encrypt_into,
    encrypt_stream,
    new_key,
)

__all__ = [
    "ALG_COBBLESTONE_256",
    "FORMAT_VERSION",
    "MAGIC",
    "SCHEME_NONE",
    "SCHEME_SHAMIR_GF256",
    "Header",
    "RangeReader",
    "ciphertext_length",
    "decrypt_file",
    "decrypt_range",
    "decrypt_stream",
    "encrypt_again",
    "encrypt_file",
    "encrypt_into",
    "encrypt_stream",
    "new_key",
    "read_header",
    "read_key_file",
    "verify_key",
    "write_key_file",
]
