"""Generate format_v1.json, the known-answer vectors of the MDM encrypted-file format v1.

Run once, commit the output, never regenerate casually: the committed file pins the format, and
tests/unit/crypto/test_vectors.py checks that this release still reads it. Cobblestone draws a
random 24-byte salt per object, so the ciphertexts cannot be reproduced bit for bit; what the
tests check is that each committed ciphertext decrypts to the committed plaintext and header,
and that the derived values recorded here (HKDF output) match.

    .venv/bin/python tests/data/vectors/make_vectors.py > tests/data/vectors/format_v1.json
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import uuid
from typing import Any

from mdm.crypto import Header, encrypt_stream
from mdm.crypto import _primitives as prim

KEY = bytes(range(0x20, 0x40))  # fixed, public test key: these vectors protect nothing
KEY_ID = uuid.UUID("6d646d00-0000-4000-8000-00000000c0de")
FILE_GUID = uuid.UUID("6d646d00-0000-4000-8000-00000000f11e")


def pattern(length: int) -> bytes:
    """The plaintext of every vector: byte i is i mod 251 (251 is prime, 16384 is not)."""
    return bytes(i % 251 for i in range(length))


def vector(name: str, length: int, **fields: Any) -> dict[str, object]:
    header = Header(key_id=KEY_ID, file_guid=FILE_GUID, plaintext_len=length, **fields)
    plaintext = pattern(length)
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), out, KEY, header)
    ct = out.getvalue()
    body = ct[header.header_len :]
    salt = body[: prim.SALT_LEN]
    okm_keys = prim.derive(KEY, salt, header.pack())
    # Our derivation must reproduce the commitment the library wrote, or the vector is useless.
    assert okm_keys.commitment == body[prim.SALT_LEN : prim.PREAMBLE_LEN]
    return {
        "name": name,
        "header": {
            "version": header.version,
            "alg": header.alg,
            "flags": header.flags,
            "header_len": header.header_len,
            "key_id": str(header.key_id),
            "file_guid": str(header.file_guid),
            "plaintext_len": header.plaintext_len,
            "share_scheme": header.share_scheme,
            "k": header.k,
            "n": header.n,
            "keyserver_set_id": header.keyserver_set_id,
            "tlvs": [[t, v.hex()] for t, v in header.tlvs],
        },
        "header_hex": header.pack().hex(),
        "plaintext": {
            "pattern": "byte i = i % 251",
            "length": length,
            "sha256": hashlib.sha256(plaintext).hexdigest(),
        },
        "derived": {
            "salt_hex": salt.hex(),
            "commitment_hex": okm_keys.commitment.hex(),
            "base_nonce_hex": okm_keys.base_nonce.to_bytes(prim.NONCE_LEN, "big").hex(),
        },
        "ciphertext_len": len(ct),
        "ciphertext_hex": ct.hex(),
    }


def invalid(name: str, ciphertext: bytes, offset: int, value: bytes) -> dict[str, object]:
    """A valid object with header bytes [offset, offset+len(value)) replaced."""
    damaged = ciphertext[:offset] + value + ciphertext[offset + len(value) :]
    return {
        "name": name,
        "ciphertext_hex": damaged.hex(),
        "read_header_error": "UnsupportedFormat",
        "decrypt_error": "InvalidCiphertext",
    }


def main() -> None:
    vectors = [
        vector("empty", 0),
        vector("one-byte", 1, share_scheme=1, k=3, n=5, keyserver_set_id=7),
        vector("one-full-chunk", 16384, share_scheme=1, k=2, n=3),
        vector("one-chunk-plus-one", 16385, share_scheme=1, k=3, n=5, keyserver_set_id=1),
        vector("with-tlvs", 100, tlvs=((0x0001, b"mdm-recall-worker"), (0x0002, b""))),
    ]
    one = bytes.fromhex(str(vectors[1]["ciphertext_hex"]))
    invalids = [
        invalid("bad-magic", one, 0, b"\x89MDMENX"),
        invalid("version-2", one, 8, b"\x02"),
        invalid("unknown-alg", one, 9, b"\x02"),
        invalid("unknown-flag", one, 10, b"\x00\x01"),
        invalid("header-len-too-small", one, 12, b"\x00\x00\x00\x20"),
        invalid("k-greater-than-n", one, 57, b"\x06"),
        invalid("reserved-byte-set", one, 59, b"\x01"),
    ]
    doc = {
        "format": "MDM encrypted object v1 (docs/format.md)",
        "generator": "tests/data/vectors/make_vectors.py",
        "key_hex": KEY.hex(),
        "aead": "AEAD_AES_256_GCM",
        "kdf": "HKDF-Expand-SHA-512, info = 'c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM' "
        "|| 0x00 || salt || header",
        "vectors": vectors,
        "invalid": invalids,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
