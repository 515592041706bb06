"""The gLite share format: the seed example, its known coefficients, and the refusals."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mdm import ssss
from mdm.errors import InvalidShares, NotEnoughShares, UsageError

#: `glite-ssss-split-passwd -q 5 3 secret` output from the seeds (notes §1.3).
EXAMPLE = [
    "137c9547aba101ef",
    "6ee7adbbaacac1ef",
    "1256bcc160eda592",
    "fdabc259cdfbacc9",
    "3113be83f203d794",
]


def positional(shares: dict[int, str], n: int = 5) -> list[str]:
    """The argument list glite join expects: share x at position x, NULL elsewhere."""
    return [shares.get(x, "NULL") for x in range(1, n + 1)]


def test_the_seed_command_line_joins_to_secret() -> None:
    tokens = ["137c9547aba101ef", "NULL", "1256bcc160eda592", "NULL", "3113be83f203d794"]
    assert ssss.glite_join(tokens) == b"secret"


@pytest.mark.parametrize("size", [3, 4, 5])
def test_every_subset_of_the_example_joins(size: int) -> None:
    for subset in itertools.combinations(range(1, 6), size):
        tokens = positional({x: EXAMPLE[x - 1] for x in subset})
        assert ssss.glite_join(tokens) == b"secret", subset
        assert ssss.glite_join(tokens, threshold=3) == b"secret", subset


def test_known_coefficients_reproduce_the_example_byte_for_byte() -> None:
    # f(x) = chunk + b x + a x^2 over GF(65521) with the (a, b) recovered in notes §1.3;
    # the chunks are "secret" in password mode: 0006 7365 6372 6574.
    chunks = [0x0006, 0x7365, 0x6372, 0x6574]
    ab = [(41971, 28532), (64314, 9881), (56174, 27826), (4554, 35490)]
    polys = [[c, b, a] for c, (a, b) in zip(chunks, ab, strict=True)]
    assert ssss._glite_shares(polys, 5) == EXAMPLE
    assert ssss._glite_chunks(b"secret") == chunks


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(range(1, 6), 2)))
def test_two_example_shares_are_refused_without_a_threshold(a: int, b: int) -> None:
    # The original printed garbage with exit code 0; the length prefix check refuses.
    with pytest.raises(InvalidShares, match="length prefix"):
        ssss.glite_join(positional({a: EXAMPLE[a - 1], b: EXAMPLE[b - 1]}))


def test_too_few_shares_for_a_given_threshold() -> None:
    with pytest.raises(NotEnoughShares, match="2 share\\(s\\) given, at least 3 needed"):
        ssss.glite_join(positional({1: EXAMPLE[0], 4: EXAMPLE[3]}), threshold=3)
    with pytest.raises(NotEnoughShares, match="give -t K"):
        ssss.glite_join(positional({1: EXAMPLE[0]}))


def test_a_threshold_checks_the_extra_shares() -> None:
    # Threshold 2 claims a line; 3 points of a parabola are not on one.
    with pytest.raises(InvalidShares, match="threshold is larger than 2"):
        ssss.glite_join(positional({1: EXAMPLE[0], 2: EXAMPLE[1], 3: EXAMPLE[2]}), threshold=2)
    # A wrong fourth share (still valid hex, < 65521) is caught against the first three.
    wrong = EXAMPLE[3][:-1] + ("0" if EXAMPLE[3][-1] != "0" else "1")
    with pytest.raises(InvalidShares, match="share 4 is not on the polynomial of shares"):
        ssss.glite_join([*EXAMPLE[:3], wrong, "NULL"], threshold=3)


def test_shares_at_the_wrong_positions_are_refused() -> None:
    # Positional format: shares 3, 4, 5 given as 1, 2, 3 interpolate at the wrong x.
    with pytest.raises(InvalidShares, match="length prefix"):
        ssss.glite_join(EXAMPLE[2:])


def test_a_garbage_length_prefix_is_refused_not_over_read() -> None:
    # Shares of a "password" claiming 65520 bytes but carrying 2: refused, never read past.
    shares = ssss._glite_shares([[65520, 7], [0x4142, 9]], 3)
    with pytest.raises(InvalidShares, match="length prefix"):
        ssss.glite_join(shares)
    # Odd length with non-zero padding is refused too.
    shares = ssss._glite_shares([[1, 7], [0x4142, 9]], 3)
    with pytest.raises(InvalidShares, match="length prefix"):
        ssss.glite_join(shares)


@pytest.mark.parametrize("chunk", [0xFFF1, 0xFFF5, 0xFFFF])
@pytest.mark.parametrize("prefix", [b"", b"ab", b"abcd"])
def test_split_refuses_chunks_outside_the_field(chunk: int, prefix: bytes) -> None:
    secret = prefix + chunk.to_bytes(2, "big") + b"z"
    with pytest.raises(UsageError, match=f"bytes {len(prefix) + 1}-{len(prefix) + 2} form a"):
        ssss.glite_split(secret, 5, 3)


def test_the_largest_chunk_inside_the_field_round_trips() -> None:
    secret = (0xFFF0).to_bytes(2, "big") * 3
    shares = ssss.glite_split(secret, 5, 3)
    assert ssss.glite_join(positional({2: shares[1], 3: shares[2], 5: shares[4]})) == secret


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(2, 6), st.data())
def test_split_then_join_any_k_positions(secret: bytes, k: int, data: st.DataObject) -> None:
    padded = secret + bytes(len(secret) % 2)
    assume(all(int.from_bytes(padded[i : i + 2], "big") < 65521 for i in range(0, len(padded), 2)))
    n = data.draw(st.integers(k, 8))
    shares = ssss.glite_split(secret, n, k)
    assert all(len(s) == 4 * (1 + (len(secret) + 1) // 2) for s in shares)
    chosen = data.draw(st.lists(st.integers(1, n), min_size=k, max_size=n, unique=True))
    tokens = positional({x: shares[x - 1] for x in chosen}, n)
    assert ssss.glite_join(tokens) == secret
    assert ssss.glite_join(tokens, threshold=k) == secret


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["137c9547aba101eg", "NULL", "1256bcc160eda592"], "share 1 is not a gLite share"),
        (["137c9547aba101e", "NULL", "1256bcc160eda592"], "share 1 is not a gLite share"),
        (["137c9547aba101ef", "NULL", "1256bcc160ed"], "different lengths"),
        (["137c9547aba1fff1", "NULL", "1256bcc160eda592"], "share 1 has a value >= 65521"),
        (["mdm1-3-1-00000000-00-0000", "137c9547aba101ef"], "drop --format glite"),
        (["NULL", "null", "NULL"], "0 share\\(s\\) given"),
    ],
)
def test_malformed_input_is_refused(tokens: list[str], message: str) -> None:
    with pytest.raises((InvalidShares, NotEnoughShares), match=message):
        ssss.glite_join(tokens)


@pytest.mark.parametrize(
    ("secret", "n", "k", "message"),
    [
        (b"", 3, 2, "must not be empty"),
        (b"x" * 65521, 3, 2, "at most 65520"),
        (b"x", 3, 1, "2 <= k <= n"),
        (b"x", 2, 3, "2 <= k <= n"),
        (b"x", "3", 2, "n must be an integer"),
    ],
)
def test_split_rejects(secret: bytes, n: int, k: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ssss.glite_split(secret, n, k)


def test_threshold_must_be_sane() -> None:
    with pytest.raises(UsageError, match="threshold"):
        ssss.glite_join(EXAMPLE, threshold=1)
