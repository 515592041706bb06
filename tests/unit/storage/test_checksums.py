"""Checksums as the grid spells them, and the narrowed set the recall worker records."""

from __future__ import annotations

import hashlib
import io
import zlib

import pytest

from mdm.storage.checksums import Checksummer, file_checksums

DATA = bytes(range(256)) * 5000


def test_all_three_in_one_pass_match_the_reference_implementations() -> None:
    sums = file_checksums(io.BytesIO(DATA))
    assert sums == {
        "adler32": f"{zlib.adler32(DATA):08x}",
        "md5": hashlib.md5(DATA, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(DATA).hexdigest(),
    }


def test_a_narrowed_set_gives_only_those_and_the_same_values() -> None:
    c = Checksummer(("adler32", "sha256"))
    view = memoryview(DATA)
    for i in range(0, len(DATA), 70_000):  # fed in pieces, from a memoryview
        c.update(view[i : i + 70_000])
    full = file_checksums(io.BytesIO(DATA))
    assert c.hexdigests() == {"adler32": full["adler32"], "sha256": full["sha256"]}
    assert c.size == len(DATA)


def test_adler32_is_zero_padded_lower_case() -> None:
    assert Checksummer(("adler32",)).hexdigests() == {"adler32": "00000001"}


def test_an_unknown_algorithm_is_named() -> None:
    with pytest.raises(ValueError, match="crc32c"):
        Checksummer(("adler32", "crc32c"))
