"""mdm.shamir: GF(2^8) arithmetic against a textbook reference, properties, validation."""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm import shamir
from mdm.errors import InvalidShares, NotEnoughShares, SecretSharingError, UsageError


def ref_mul(a: int, b: int) -> int:
    """Textbook GF(2^8) product: carry-less multiply, then reduce by x^8+x^4+x^3+x+1."""
    product = 0
    for i in range(8):
        if (b >> i) & 1:
            product ^= a << i
    for bit in range(14, 7, -1):
        if (product >> bit) & 1:
            product ^= 0x11B << (bit - 8)
    return product


#: The reference product as a table: fine in a test, and fast enough for exhaustive counts.
MUL = [[ref_mul(a, b) for b in range(256)] for a in range(256)]


def ref_eval(coefficients: list[int], x: int) -> int:
    """f(x) for f = c0 + c1 x + c2 x^2 + ..., with the reference product."""
    total, power = 0, 1
    for c in coefficients:
        total ^= MUL[c][power]
        power = MUL[power][x]
    return total


def test_reference_mul_matches_known_aes_products() -> None:
    # FIPS-197 §4.2: {57} . {83} = {c1}, {57} . {13} = {fe}.
    assert ref_mul(0x57, 0x83) == 0xC1
    assert ref_mul(0x57, 0x13) == 0xFE


def test_branch_free_mul_matches_reference_on_all_pairs() -> None:
    for a in range(256):
        for b in range(256):
            assert shamir._gf_mul(a, b) == ref_mul(a, b), (a, b)


def test_inverse_of_every_nonzero_element() -> None:
    for a in range(1, 256):
        assert ref_mul(a, shamir._gf_inv(a)) == 1, a


@given(st.binary(min_size=1, max_size=64), st.integers(0, 255))
def test_lane_parallel_mul_equals_bytewise_mul(data: bytes, c: int) -> None:
    product = shamir._vec_mul(int.from_bytes(data, "big"), c, len(data))
    assert product.to_bytes(len(data), "big") == bytes(ref_mul(b, c) for b in data)


@st.composite
def splits(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    secret = draw(st.binary(min_size=1, max_size=40))
    n = draw(st.integers(2, 7))
    k = draw(st.integers(2, n))
    xs = draw(st.lists(st.integers(1, 255), min_size=n, max_size=n, unique=True))
    return secret, n, k, xs


@settings(max_examples=60, deadline=None)
@given(splits())
def test_every_k_subset_recombines(case: tuple[bytes, int, int, list[int]]) -> None:
    secret, n, k, xs = case
    shares = shamir.split(secret, n, k, xs=xs)
    assert [s.x for s in shares] == xs
    assert all(len(s.y) == len(secret) for s in shares)
    for subset in itertools.combinations(shares, k):
        assert shamir.combine(subset) == secret
        assert shamir.combine(reversed(subset)) == secret
    assert shamir.combine(shares) == secret  # more than k is fine


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=16), st.integers(2, 5))
def test_shares_lie_on_one_polynomial_of_degree_below_k(secret: bytes, k: int) -> None:
    # Any k shares determine the polynomial; every other share must agree with it.
    shares = shamir.split(secret, 8, k)
    basis = shares[:k]
    for extra in shares[k:]:
        assert shamir.combine([*basis, extra]) == shamir.combine(basis)


def test_default_coordinates_are_one_to_n() -> None:
    assert [s.x for s in shamir.split(b"k" * 32, 5, 3)] == [1, 2, 3, 4, 5]


def test_split_is_randomized() -> None:
    a, b = shamir.split(b"same secret", 3, 2), shamir.split(b"same secret", 3, 2)
    assert [s.y for s in a] != [s.y for s in b]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 255), st.lists(st.integers(1, 255), min_size=2, max_size=2, unique=True))
def test_one_share_of_a_2_of_n_split_fits_every_secret_exactly_once(
    secret: int, xs: list[int]
) -> None:
    # k = 2: f(x) = s + a1 x. For the share an attacker holds and each candidate s, count
    # the polynomials (all 256 values of a1) that pass through it: exactly one each.
    share = shamir.split(bytes([secret]), 2, 2, xs=xs)[0]
    for candidate in range(256):
        fits = [a1 for a1 in range(256) if ref_eval([candidate, a1], share.x) == share.y[0]]
        assert len(fits) == 1, (candidate, fits)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 255), st.lists(st.integers(1, 255), min_size=3, max_size=3, unique=True))
def test_two_shares_of_a_3_of_n_split_fit_every_secret_exactly_once(
    secret: int, xs: list[int]
) -> None:
    # k = 3: f(x) = s + a1 x + a2 x^2. Given shares (x1, y1), (x2, y2) and a candidate s,
    # count the (a1, a2) with f(x1) = y1 and f(x2) = y2. For each a2 the first equation fixes
    # a1 = (y1 - s - a2 x1^2) / x1, so enumerating a2 counts every solution.
    shares = shamir.split(bytes([secret]), 3, 3, xs=xs)[:2]
    (x1, y1), (x2, y2) = ((s.x, s.y[0]) for s in shares)
    inv_x1 = shamir._gf_inv(x1)
    for candidate in range(256):
        count = 0
        for a2 in range(256):
            a1 = MUL[y1 ^ candidate ^ MUL[a2][MUL[x1][x1]]][inv_x1]
            count += ref_eval([candidate, a1, a2], x2) == y2
        assert count == 1, candidate


def test_one_share_is_uniform_over_the_split_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    # Drive split() itself through all 256 values of its random coefficient (k = 2): for every
    # secret, share x takes each value exactly once, so it says nothing about the secret.
    for s in (0x00, 0x01, 0x5A, 0xFF):
        for x in (1, 7, 255):
            seen = []
            for a1 in range(256):
                monkeypatch.setattr(shamir.secrets, "token_bytes", lambda n, v=a1: bytes([v]) * n)
                seen.append(shamir.split(bytes([s]), 2, 2, xs=[x, 1 if x != 1 else 2])[0].y[0])
            assert sorted(seen) == list(range(256)), (s, x)


def test_share_bytes_round_trip_in_vault_layout() -> None:
    share = shamir.Share(x=3, y=b"\x01\x02")
    assert share.to_bytes() == b"\x01\x02\x03"
    assert shamir.Share.from_bytes(b"\x01\x02\x03") == share
    assert "y" not in repr(share)
    assert "\\x01" not in repr(share)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "at least 2 bytes"), (b"\x07", "at least 2 bytes"), (b"\x07\x00", "1..255")],
)
def test_share_from_bytes_rejects(data: bytes, message: str) -> None:
    with pytest.raises(InvalidShares, match=message):
        shamir.Share.from_bytes(data)


@pytest.mark.parametrize(
    ("secret", "n", "k", "xs", "message"),
    [
        (b"", 3, 2, None, "must not be empty"),
        (b"s", 3, 1, None, "2 <= k <= n"),
        (b"s", 2, 3, None, "2 <= k <= n"),
        (b"s", 256, 2, None, "2 <= k <= n"),
        (b"s", 1, 1, None, "2 <= k <= n"),
        (b"s", 3, 2, [1, 2], "3 shares"),
        (b"s", 3, 2, [1, 2, 2], "distinct"),
        (b"s", 3, 2, [0, 1, 2], "1..255"),
        (b"s", 3, 2, [1, 2, 256], "1..255"),
        (b"s", 3.0, 2, None, "n must be an integer"),
        (b"s", 3, True, None, "k must be an integer"),
    ],
)
def test_split_rejects(secret: bytes, n: int, k: int, xs: list[int] | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        shamir.split(secret, n, k, xs=xs)


def test_split_accepts_the_extremes() -> None:
    secret = secrets.token_bytes(3)
    shares = shamir.split(secret, 255, 255)
    assert [s.x for s in shares] == list(range(1, 256))
    assert shamir.combine(shares) == secret


def test_combine_rejects() -> None:
    a, b, _c = shamir.split(b"secret", 3, 2)
    with pytest.raises(NotEnoughShares, match="at least 2"):
        shamir.combine([a])
    with pytest.raises(NotEnoughShares):
        shamir.combine([])
    with pytest.raises(InvalidShares, match="duplicate share x \\[1\\]"):
        shamir.combine([a, a, b])
    with pytest.raises(InvalidShares, match="different lengths"):
        shamir.combine([a, shamir.Share(x=2, y=b.y + b"\x00")])
    with pytest.raises(InvalidShares, match="Share objects"):
        shamir.combine([a, b.to_bytes()])  # type: ignore[list-item]
    assert issubclass(InvalidShares, SecretSharingError)


def test_a_wrong_share_gives_a_wrong_secret_silently() -> None:
    # Documented limitation: integrity is the caller's job (share hashes, key commitment).
    a, b, _ = shamir.split(b"secret", 3, 2)
    bad = shamir.Share(x=b.x, y=bytes([b.y[0] ^ 1]) + b.y[1:])
    assert shamir.combine([a, bad]) != b"secret"
