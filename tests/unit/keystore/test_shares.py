"""Share integrity helpers: repair shares lie on the same polynomial; recovery names liars."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.keyserver.service import share_hash as server_share_hash
from mdm.keystore.shares import Meta, key_check_value, recover, share_at, share_hash
from mdm.shamir import split


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=16, max_size=48), st.integers(2, 5), st.data())
def test_share_at_recomputes_every_other_share(key: bytes, k: int, data: st.DataObject) -> None:
    n = k + 2
    shares = split(key, n, k)
    basis = data.draw(st.permutations(shares)).__getitem__(slice(0, k))
    for s in shares:
        assert share_at(basis, s.x) == s


def test_client_and_server_hash_the_same_way() -> None:
    assert share_hash("kid", 3, b"abc\x03") == server_share_hash("kid", 3, b"abc\x03")


def test_recover_with_two_garbage_shares_names_both() -> None:
    key, kid = bytes(range(32)), "k"
    shares = {s.x: s.to_bytes() for s in split(key, 5, 3)}
    meta = Meta(
        tuple(share_hash(kid, x, b) for x, b in sorted(shares.items())),
        3,
        5,
        key_check_value(key, kid),
    )
    shares[1] = bytes(32) + b"\x01"
    shares[5] = bytes([7] * 32) + b"\x05"
    got = recover(kid, shares, dict.fromkeys(shares, meta))
    assert got is not None
    assert got.key == key
    assert set(got.bad) == {1, 5}
    assert got.used == (2, 3, 4)


def test_recover_refuses_a_key_that_fails_its_check_value() -> None:
    key, kid = bytes(range(32)), "k"
    shares = {s.x: s.to_bytes() for s in split(key, 5, 3)}
    meta = Meta(tuple(share_hash(kid, x, b) for x, b in sorted(shares.items())), 3, 5, "0" * 32)
    assert recover(kid, shares, dict.fromkeys(shares, meta)) is None
