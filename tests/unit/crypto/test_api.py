"""The public surface of mdm.crypto is exactly its ``__all__`` (STYLE C14 item 2)."""

from __future__ import annotations

import mdm.crypto

EXPECTED = {
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
}


def test_public_names_are_curated() -> None:
    assert set(mdm.crypto.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(mdm.crypto, name) is not None


def test_hazmat_primitives_stay_private() -> None:
    assert not any("primitive" in name.lower() for name in mdm.crypto.__all__)
    assert "HAZMAT" in (mdm.crypto._primitives.__doc__ or "")


def test_new_keys_are_32_random_bytes() -> None:
    keys = {mdm.crypto.new_key() for _ in range(4)}
    assert len(keys) == 4
    assert all(len(k) == 32 for k in keys)
