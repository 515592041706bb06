"""``prepare_many``: one Shamir split of the concatenated keys must give every key shares that are
as good as its own split: any k of them rebuild it, the hash vector and KCV match, and shares
of different keys are independent (no share of one key is derived from another's)."""

from __future__ import annotations

import secrets
from itertools import combinations

import pytest

from mdm.errors import UsageError
from mdm.keystore.batch import prepare, prepare_many
from mdm.keystore.shares import Meta, key_check_value, recover, share_hash, verify_share
from mdm.shamir import Share, combine


def test_every_key_of_a_batch_rebuilds_from_any_k_of_its_shares() -> None:
    keys = {f"k{i}": secrets.token_bytes(length) for i, length in enumerate((32, 16, 64, 32, 17))}
    ready, refused = prepare_many([(kid, key, None) for kid, key in keys.items()], n=5, k=3)
    assert refused == {}
    assert [p.key_id for p in ready] == list(keys)
    for p in ready:
        key = keys[p.key_id]
        assert [s[-1] for s in p.shares] == [1, 2, 3, 4, 5]  # y || x, x = slot
        assert all(len(s) == len(key) + 1 for s in p.shares)
        assert p.hv == tuple(share_hash(p.key_id, x, s) for x, s in enumerate(p.shares, 1))
        assert p.kcv == key_check_value(key, p.key_id)
        for subset in combinations(p.shares, 3):
            assert combine(Share.from_bytes(s) for s in subset) == key
        # two shares say nothing: they do not combine to the key
        assert combine(Share.from_bytes(s) for s in p.shares[:2]) != key
        meta = Meta(p.hv, p.k, p.n, p.kcv)
        assert all(verify_share(p.key_id, x, s, meta) is None for x, s in enumerate(p.shares, 1))
        found = recover(p.key_id, dict(enumerate(p.shares[2:], 3)), dict.fromkeys((3, 4, 5), meta))
        assert found is not None
        assert found.key == key


def test_keys_of_one_batch_get_independent_polynomials() -> None:
    """The same key twice in a batch (two ids) gets two different share sets, as it would
    from two splits: the random coefficients are per byte, not per batch."""
    key = secrets.token_bytes(32)
    ready, _ = prepare_many([("a", key, None), ("b", key, None)], n=5, k=3)
    a, b = ready
    assert all(sa[:-1] != sb[:-1] for sa, sb in zip(a.shares, b.shares, strict=True))
    single = prepare("a", key, None, n=5, k=3)
    assert single.shares != a.shares  # fresh randomness, same layout
    assert [len(s) for s in single.shares] == [len(s) for s in a.shares]


def test_a_refused_key_does_not_disturb_the_others() -> None:
    good = secrets.token_bytes(32)
    ready, refused = prepare_many(
        [
            ("short", b"x" * 8, None),
            ("good", good, {"dn:/CN=Bob": ["read"]}),
            ("acl", good, {"not a principal": ["read"]}),
        ],
        n=5,
        k=3,
    )
    assert set(refused) == {"short", "acl"}
    assert all(isinstance(e, UsageError) for e in refused.values())
    assert [p.key_id for p in ready] == ["good"]
    assert ready[0].entries == {"dn:/CN=Bob": ["read"]}
    assert combine(Share.from_bytes(s) for s in ready[0].shares[1:4]) == good


@pytest.mark.parametrize(("n", "k"), [(2, 2), (7, 4)])
def test_other_thresholds(n: int, k: int) -> None:
    keys = [(f"t{i}", secrets.token_bytes(32), None) for i in range(3)]
    ready, _ = prepare_many(keys, n=n, k=k)
    for (_, key, _), p in zip(keys, ready, strict=True):
        assert len(p.shares) == n
        assert combine(Share.from_bytes(s) for s in p.shares[-k:]) == key
