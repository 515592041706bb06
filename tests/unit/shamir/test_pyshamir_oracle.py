"""Interoperability with pyshamir (a port of HashiCorp Vault's shamir), used only as an oracle.

pyshamir draws a random x per share and stores it in the last byte, as Vault does; our shares
use a fixed x, in the same layout. Both directions must agree.
"""

from __future__ import annotations

import itertools
import random

import pyshamir
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm import shamir


@settings(max_examples=15, deadline=None)
@given(st.binary(min_size=1, max_size=32), st.integers(2, 5), st.data())
def test_pyshamir_combines_our_shares(secret: bytes, k: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(k, 6))
    xs = data.draw(st.lists(st.integers(1, 255), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, n, k, xs=xs)
    subset = data.draw(st.permutations(shares))[:k]
    assert bytes(pyshamir.combine([bytearray(s.to_bytes()) for s in subset])) == secret


@settings(max_examples=15, deadline=None)
@given(st.binary(min_size=1, max_size=32), st.integers(2, 5), st.data())
def test_we_combine_pyshamir_shares(secret: bytes, k: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(k, 6))
    parts = pyshamir.split(secret, n, k)
    shares = [shamir.Share.from_bytes(bytes(p)) for p in parts]
    assert [s.x for s in shares] == [p[-1] for p in parts]
    subset = data.draw(st.permutations(shares))[:k]
    assert shamir.combine(subset) == secret


def test_32_byte_key_5_of_3_every_subset_both_ways() -> None:
    rng = random.Random(20261122)
    key = rng.randbytes(32)
    ours = shamir.split(key, 5, 3)
    theirs = [shamir.Share.from_bytes(bytes(p)) for p in pyshamir.split(key, 5, 3)]
    for subset in itertools.combinations(range(5), 3):
        assert bytes(pyshamir.combine([bytearray(ours[i].to_bytes()) for i in subset])) == key
        assert shamir.combine([theirs[i] for i in subset]) == key
