"""The mdm1 share format: round trips, and refusal (never garbage) of too few or wrong shares."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm import ssss
from mdm.errors import InvalidShares, NotEnoughShares, UsageError


def forge(text: str, **changes: object) -> str:
    """Rewrite fields of a share and give it a valid checksum, as a deliberate attacker would."""
    return dataclasses.replace(ssss.MdmShare.from_text(text), **changes).to_text()


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=80), st.integers(2, 6), st.data())
def test_any_k_shares_in_any_order_join(secret: bytes, k: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(k, 7))
    shares = ssss.split(secret, n, k)
    chosen = data.draw(st.permutations(shares))[: data.draw(st.integers(k, n))]
    tokens = [*chosen, "NULL", None, "  "]
    assert ssss.join(data.draw(st.permutations(tokens))) == secret


def test_share_text_layout() -> None:
    shares = ssss.split(b"hunter2", 5, 3)
    ids = set()
    for x, text in enumerate(shares, 1):
        tag, k, xx, split_id, y, check = text.split("-")
        assert (tag, k, xx) == ("mdm1", "3", str(x))
        ids.add(split_id)
        assert len(y) == 2 * (16 + 8)  # 2 + 7 bytes padded to 16, plus the 8-byte digest
        assert len(check) == 4
    assert len(ids) == 1
    assert ssss.join([s.upper() for s in shares[2:]]) == b"hunter2"  # case does not matter


def test_share_length_hides_the_secret_length_within_a_block() -> None:
    lengths = {len(ssss.split(b"p" * size, 2, 2)[0]) for size in range(1, 15)}
    assert len(lengths) == 1


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(2, 5))
def test_too_few_shares_are_refused_never_garbage(secret: bytes, k: int) -> None:
    shares = ssss.split(secret, k + 1, k)
    for subset in itertools.combinations(shares, k - 1):
        with pytest.raises(NotEnoughShares, match=f"need k={k}"):
            ssss.join(subset)
        if k - 1 >= 2:
            # Even when someone lowers k in the text (valid checksums), the digest refuses.
            with pytest.raises(InvalidShares, match="do not rebuild"):
                ssss.join([forge(s, k=k - 1) for s in subset])


def test_shares_of_different_splits_are_refused() -> None:
    a, b = ssss.split(b"first", 3, 2), ssss.split(b"first", 3, 2)
    with pytest.raises(InvalidShares, match="different splits"):
        ssss.join([a[0], b[1]])
    # Same split id forged onto the other split's share: the digest still refuses.
    split_id = ssss.MdmShare.from_text(a[0]).split_id
    with pytest.raises(InvalidShares, match="do not rebuild"):
        ssss.join([a[0], forge(b[1], split_id=split_id)])


def test_an_altered_share_is_named_when_more_than_k_are_given() -> None:
    shares = ssss.split(b"correct horse", 5, 3)
    share = ssss.MdmShare.from_text(shares[3])
    altered = forge(shares[3], y=bytes([share.y[0] ^ 0x40]) + share.y[1:])
    with pytest.raises(InvalidShares, match=r"share x=\[4\] does not match"):
        ssss.join([*shares[:3], altered])
    with pytest.raises(InvalidShares, match="do not rebuild"):
        ssss.join([shares[0], shares[1], altered])


def test_a_typo_is_caught_by_the_checksum_and_named() -> None:
    shares = ssss.split(b"secret", 3, 2)
    text = shares[1]
    digit = "0" if text[20] != "0" else "1"
    with pytest.raises(InvalidShares, match="share 2 fails its checksum"):
        ssss.join([shares[0], text[:20] + digit + text[21:]])


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("mdm1-3-1-abcd", "not an MDM share"),
        ("137c9547aba101ef", "looks like a gLite share"),
        ("mdm2-3-1-00000000-00-0000", "not an MDM share"),
    ],
)
def test_malformed_shares_are_refused(token: str, message: str) -> None:
    good = ssss.split(b"secret", 3, 2)[0]
    with pytest.raises(InvalidShares, match=message):
        ssss.join([good, token])


def test_out_of_range_fields_are_refused_even_with_a_valid_checksum() -> None:
    share = ssss.MdmShare.from_text(ssss.split(b"s", 2, 2)[0])
    for changes, message in (
        ({"x": 0}, "outside"),
        ({"k": 1}, "outside"),
        ({"y": b"\0" * 9}, "impossible length"),
    ):
        with pytest.raises(InvalidShares, match=message):
            ssss.MdmShare.from_text(dataclasses.replace(share, **changes).to_text())


def test_repeated_share_threshold_mismatch_and_no_shares() -> None:
    shares = ssss.split(b"secret", 3, 2)
    with pytest.raises(InvalidShares, match=r"x=\[1\] given more than once"):
        ssss.join([shares[0], shares[0]])
    with pytest.raises(UsageError, match="shares say k=2"):
        ssss.join(shares, threshold=3)
    assert ssss.join(shares, threshold=2) == b"secret"
    with pytest.raises(NotEnoughShares, match="no shares"):
        ssss.join(["NULL", None])


@pytest.mark.parametrize(
    ("secret", "n", "k", "message"),
    [
        (b"", 3, 2, "must not be empty"),
        (b"x" * 65536, 3, 2, "at most 65535"),
        (b"x", 3, 1, "2..255"),
        (b"x", 2, 3, "2 <= k <= n"),
        (b"x", 256, 3, "2 <= k <= n"),
    ],
)
def test_split_rejects(secret: bytes, n: int, k: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ssss.split(secret, n, k)


def test_repr_hides_share_values() -> None:
    share = ssss.MdmShare.from_text(ssss.split(b"secret", 2, 2)[0])
    assert share.y.hex() not in repr(share)
