"""Share integrity for the key store: hash vector, key check value, and robust recovery.

Plain Shamir returns a wrong key without complaint when one share is wrong
(``mdm.shamir.combine``). The dealer therefore publishes, with every share:

* the **share-hash vector** ``HV[x] = SHA-256("mdm-share|" || key_id || "|" || x || share_x)``
  for x = 1..n, which lets a fetcher tell a good share from a bad one and *name* the server;
* the **key check value** ``KCV = HMAC-SHA-256(K, "mdm-kcv|" || key_id)[:16]``, which confirms
  the rebuilt key and reveals nothing about it.

A fetcher trusts the (HV, k, n, KCV) tuple that the shares it combines agree on, combines k
shares that match it, and confirms the key with the KCV; if that fails it tries the other
k-subsets (at most C(5,3) = 10). Once the key is known, the whole polynomial is known, so each
server's share can be recomputed and compared exactly: localisation does not depend on which
subset happened to verify (notes/keystore-and-crypto.md §5.2).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from mdm.errors import InvalidShares
from mdm.shamir import Share, combine

KCV_BYTES = 16


def share_hash(key_id: str, x: int, share: bytes) -> str:
    """``HV[x]``: SHA-256 over the domain tag, the key id, the slot and the share bytes."""
    return hashlib.sha256(b"mdm-share|" + key_id.encode() + b"|" + bytes([x]) + share).hexdigest()


def key_check_value(key: bytes, key_id: str) -> str:
    return hmac.new(key, b"mdm-kcv|" + key_id.encode(), hashlib.sha256).digest()[:KCV_BYTES].hex()


def share_at(shares: Sequence[Share], x: int) -> Share:
    """The share of slot *x* on the polynomial through *shares* (exactly k of them).

    Lagrange interpolation is translation invariant: in GF(2^8) addition is XOR, so
    g(t) = f(t XOR x) is a polynomial of the same degree with g(0) = f(x), and its points are
    (x_i XOR x, y_i). Interpolating g at 0 with ``combine`` gives f(x). Used for repair: the new
    share of a lost slot lies on the *same* polynomial, so the other shares stay valid.
    """
    for s in shares:
        if s.x == x:
            return s
    y = combine(Share(s.x ^ x, s.y) for s in shares)
    return Share(x, y)


@dataclass(frozen=True)
class Meta:
    """The public facts about a key every server stores alongside its share."""

    share_hashes: tuple[str, ...]
    k: int
    n: int
    kcv: str


@dataclass(frozen=True)
class Recovery:
    key: bytes
    meta: Meta
    used: tuple[int, ...]  # slots whose shares were combined
    bad: dict[int, str]  # slot -> why its share is wrong


def verify_share(key_id: str, slot: int, share: bytes, meta: Meta) -> str | None:
    """``None`` if *share* is the right one for *slot* under *meta*, else the reason."""
    if not 1 <= slot <= meta.n or len(meta.share_hashes) != meta.n:
        return f"slot {slot} is outside the key's n={meta.n}"
    if len(share) < 2 or share[-1] != slot:
        return "share is not for this slot"
    if not hmac.compare_digest(share_hash(key_id, slot, share), meta.share_hashes[slot - 1]):
        return "share does not match the share-hash vector"
    return None


def recover(key_id: str, shares: Mapping[int, bytes], metas: Mapping[int, Meta]) -> Recovery | None:
    """The key from the shares received so far, or ``None`` if they are not yet enough.

    *shares* and *metas* map slot -> what that server returned. Candidate metadata are tried
    most-supported first; for each, the shares matching its hash vector are combined k at a
    time until one subset passes the KCV. As a last resort (hash vectors themselves damaged on
    most servers) every k-subset of all shares is tried against each candidate KCV.
    """
    support: dict[Meta, list[int]] = {}
    for slot, meta in metas.items():
        support.setdefault(meta, []).append(slot)
    ranked = sorted(support.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
    for meta, _ in ranked:
        good = sorted(
            s for s in shares if s in metas and verify_share(key_id, s, shares[s], meta) is None
        )
        found = _try_subsets(key_id, good, shares, meta)
        if found is not None:
            return _finish(key_id, found, shares, metas, meta)
    for meta, _ in ranked:
        found = _try_subsets(key_id, sorted(shares), shares, meta)
        if found is not None:
            return _finish(key_id, found, shares, metas, meta)
    return None


def _try_subsets(
    key_id: str, slots: Sequence[int], shares: Mapping[int, bytes], meta: Meta
) -> tuple[bytes, tuple[int, ...]] | None:
    if len(slots) < meta.k:
        return None
    for subset in combinations(slots, meta.k):
        try:
            key = combine(Share.from_bytes(shares[s]) for s in subset)
        except InvalidShares:
            continue
        if hmac.compare_digest(key_check_value(key, key_id), meta.kcv):
            return key, subset
    return None


def _finish(
    key_id: str,
    found: tuple[bytes, tuple[int, ...]],
    shares: Mapping[int, bytes],
    metas: Mapping[int, Meta],
    meta: Meta,
) -> Recovery:
    key, used = found
    basis = [Share.from_bytes(shares[s]) for s in used]
    bad: dict[int, str] = {}
    for slot, share in shares.items():
        if not 1 <= slot <= meta.n:
            bad[slot] = "slot outside the key's n"
            continue
        expected = share_at(basis, slot).to_bytes()
        if not hmac.compare_digest(expected, share):
            bad[slot] = "returned a wrong share"
        elif metas.get(slot) != meta:
            bad[slot] = "returned wrong key metadata (hash vector, k, n or KCV)"
    return Recovery(key, meta, used, bad)
