"""The text share formats of ``mdm ssss``: MDM's own (default) and the original gLite one.

**MDM format** (``mdm1``), one share per line::

    mdm1-<k>-<x>-<split id: 8 hex>-<y: hex>-<checksum: 4 hex>

*y* is a :mod:`mdm.shamir` share (GF(2^8)) of an *extended secret*
``E = len16 || secret || zero padding to 16 bytes || digest8``, where
``digest8 = SHA-256("mdm-ssss-v1" || k || split id || len16 || secret || padding)[:8]``.
The digest is itself secret-shared (the SLIP-39 / draft-mcgrew-tss "robust" idea), so a
share holder learns nothing from it, not even for a guessable password, yet a join from too
few, mixed or altered shares fails the digest (false accept 2^-64) instead of printing
garbage. The padding hides the exact secret length. The checksum (SHA-256 of the text before
it, 2 bytes) only catches typing errors in one share and tells which one; it is public and
covers public data. The split id is random and public: shares of different splits are told
apart before any arithmetic. See docs/shamir.md for why.

**gLite format** (``glite-ssss-split-passwd`` / ``glite-ssss-join-passwd``, org.glite.security.ssss;
notes/keystore-and-crypto.md §1.2): the password becomes ``%04x`` of its length followed by its
bytes in hex, padded with ``00`` to whole 16-bit chunks; each chunk is shared on its own over
the prime field GF(65521), and share *i* (x = i, 1-based, never written) is every chunk's
``f(i)`` as 4 hex digits. Shares are positional: a missing one is ``NULL``. The original
corrupted chunks >= 65521 and printed garbage for too few shares; here split refuses such
secrets and join checks what can be checked (see :func:`glite_join`).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mdm import shamir
from mdm.errors import InvalidShares, NotEnoughShares, UsageError

__all__ = ["GLITE_PRIME", "MdmShare", "glite_join", "glite_split", "join", "split"]

_TAG = "mdm1"
_DOMAIN = b"mdm-ssss-v1"
_ID_BYTES = 4
_DIGEST_BYTES = 8
_BLOCK = 16
_MAX_SECRET = 0xFFFF
#: Diagnosing which shares are bad tries k-subsets; past this many we only report the failure.
_MAX_SUBSETS = 5000
_MDM_RE = re.compile(
    r"mdm1-(?P<k>[0-9]{1,3})-(?P<x>[0-9]{1,3})-(?P<id>[0-9a-f]{8})-(?P<y>(?:[0-9a-f]{2})+)"
    r"-(?P<sum>[0-9a-f]{4})"
)

GLITE_PRIME = 65521  # the largest prime below 2^16: gLite's field
_HEX4 = re.compile(r"(?:[0-9a-f]{4})+")


def _is_null(token: str | None) -> bool:
    return token is None or token.strip().upper() == "NULL"


# -- MDM format ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MdmShare:
    """One parsed ``mdm1`` share; ``repr`` hides ``y``."""

    k: int
    x: int
    split_id: bytes
    y: bytes = field(repr=False)

    def to_text(self) -> str:
        body = f"{_TAG}-{self.k}-{self.x}-{self.split_id.hex()}-{self.y.hex()}"
        return f"{body}-{_checksum(body)}"

    @classmethod
    def from_text(cls, text: str, position: int = 1) -> MdmShare:
        """Parse one share; *position* (1-based) only names it in error messages."""
        token = text.strip().lower()
        match = _MDM_RE.fullmatch(token)
        if match is None:
            hint = ""
            if _HEX4.fullmatch(token):
                hint = " (it looks like a gLite share: add --format glite)"
            raise InvalidShares(f"share {position} is not an MDM share (mdm1-K-X-ID-HEX-SUM){hint}")
        body = token.rsplit("-", 1)[0]
        if not hmac.compare_digest(_checksum(body), match["sum"]):
            raise InvalidShares(f"share {position} fails its checksum: it was mistyped or damaged")
        k, x = int(match["k"]), int(match["x"])
        if not 2 <= k <= shamir.MAX_SHARES or not 1 <= x <= shamir.MAX_SHARES:
            raise InvalidShares(f"share {position} has k={k} x={x}, outside 2..255 / 1..255")
        y = bytes.fromhex(match["y"])
        if len(y) < _BLOCK + _DIGEST_BYTES or (len(y) - _DIGEST_BYTES) % _BLOCK:
            raise InvalidShares(f"share {position} has a value of impossible length {len(y)}")
        return cls(k=k, x=x, split_id=bytes.fromhex(match["id"]), y=y)


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode("ascii")).digest()[:2].hex()


def _digest(k: int, split_id: bytes, body: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + bytes([k]) + split_id + body).digest()[:_DIGEST_BYTES]


def split(secret: bytes, n: int, k: int) -> list[str]:
    """Split *secret* into *n* ``mdm1`` share strings (x = 1..n), any *k* of which join."""
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= shamir.MAX_SHARES:
        raise UsageError(f"k must be an integer in 2..255, got {k!r}")
    if not secret:
        raise UsageError("the secret must not be empty")
    if len(secret) > _MAX_SECRET:
        raise UsageError(f"the secret is {len(secret)} bytes; the MDM format holds at most 65535")
    body = len(secret).to_bytes(2, "big") + bytes(secret)
    body += bytes(-len(body) % _BLOCK)
    split_id = secrets.token_bytes(_ID_BYTES)
    extended = body + _digest(k, split_id, body)
    return [
        MdmShare(k=k, x=s.x, split_id=split_id, y=s.y).to_text()
        for s in shamir.split(extended, n, k)
    ]


def _open(k: int, split_id: bytes, extended: bytes) -> bytes | None:
    """The secret inside a joined extended secret, or ``None`` if its digest does not match."""
    body, digest = extended[:-_DIGEST_BYTES], extended[-_DIGEST_BYTES:]
    if not hmac.compare_digest(_digest(k, split_id, body), digest):
        return None
    length = int.from_bytes(body[:2], "big")
    if length == 0 or 2 + length > len(body) or any(body[2 + length :]):
        return None  # authenticated but malformed: only a forged split gets here
    return body[2 : 2 + length]


def join(tokens: Iterable[str | None], threshold: int | None = None) -> bytes:
    """Join ``mdm1`` shares (``NULL`` or ``None`` entries are skipped; order does not matter).

    Raises
    ------
    NotEnoughShares
        Fewer than the *k* written in the shares.
    InvalidShares
        A malformed or mistyped share, shares of different splits, a repeated x, or shares
        that do not rebuild a secret matching its digest (named when they can be found).
    UsageError
        *threshold* given and different from the shares' k.
    """
    shares = []
    for position, token in enumerate(tokens, 1):
        if token is not None and token.strip() and not _is_null(token):
            shares.append(MdmShare.from_text(token, position))
    if not shares:
        raise NotEnoughShares("no shares given")
    first = shares[0]
    if any((s.k, s.split_id, len(s.y)) != (first.k, first.split_id, len(first.y)) for s in shares):
        ids = sorted({s.split_id.hex() for s in shares})
        raise InvalidShares(f"shares come from different splits (ids {', '.join(ids)})")
    k = first.k
    if threshold is not None and threshold != k:
        raise UsageError(f"--threshold {threshold} given but the shares say k={k}")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        dupes = sorted({x for x in xs if xs.count(x) > 1})
        raise InvalidShares(f"share x={dupes} given more than once")
    if len(shares) < k:
        raise NotEnoughShares(f"these shares need k={k} to join; only {len(shares)} given")
    plain = [shamir.Share(x=s.x, y=s.y) for s in shares]
    secret = _open(k, first.split_id, shamir.combine(plain))
    if secret is not None:
        return secret
    raise InvalidShares(_diagnose(plain, k, first.split_id))


def _diagnose(shares: list[shamir.Share], k: int, split_id: bytes) -> str:
    """Name the shares that disagree, if some k-subset still verifies (more than k given).

    A share lies on the polynomial of a verified subset iff adding it leaves f(0) unchanged:
    an off-curve point adds e * L(0) with L(0) != 0 because no x is 0.
    """
    generic = "the shares do not rebuild the secret: at least one is wrong or altered"
    if len(shares) == k or math.comb(len(shares), k) > _MAX_SUBSETS:
        return generic
    for subset in itertools.combinations(shares, k):
        reference = shamir.combine(subset)
        if _open(k, split_id, reference) is not None:
            used = {s.x for s in subset}
            bad = [
                s.x
                for s in shares
                if s.x not in used
                and not hmac.compare_digest(shamir.combine([*subset, s]), reference)
            ]
            return f"share x={bad} does not match the others: it is wrong or altered"
    return generic


# -- gLite format -------------------------------------------------------------------------------


def _glite_chunks(secret: bytes) -> list[int]:
    """Password mode: ``%04x`` length, then the bytes, zero-padded to whole 16-bit chunks."""
    data = len(secret).to_bytes(2, "big") + secret + bytes(len(secret) % 2)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def glite_split(secret: bytes, n: int, k: int) -> list[str]:
    """Split a password into *n* positional gLite shares (share i is x = i), any *k* join.

    Raises
    ------
    UsageError
        Bad n/k, an empty secret or one longer than 65520 bytes, or a secret with a 16-bit
        chunk >= 65521: such a chunk does not fit the field, and the original silently
        reduced it mod 65521, so the join gave back a different secret.
    """
    for name, value in (("n", n), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} must be an integer, got {value!r}")
    if not 2 <= k <= n <= shamir.MAX_SHARES:
        raise UsageError(f"need 2 <= k <= n <= 255, got n={n} k={k}")
    if not secret:
        raise UsageError("the secret must not be empty")
    if len(secret) >= GLITE_PRIME:
        raise UsageError(f"the gLite format holds at most 65520 bytes, got {len(secret)}")
    chunks = _glite_chunks(bytes(secret))
    for index, chunk in enumerate(chunks[1:]):
        if chunk >= GLITE_PRIME:
            # Name the position only: the chunk value is two bytes of the secret.
            raise UsageError(
                f"the gLite format cannot carry this secret: bytes {2 * index + 1}-{2 * index + 2}"
                " form a 16-bit chunk >= 65521, which the original silently corrupted;"
                " use --format mdm"
            )
    # Uniform coefficients in [0, p): the original took 16 random bits mod p, slightly biased.
    polys = [[c] + [secrets.randbelow(GLITE_PRIME) for _ in range(k - 1)] for c in chunks]
    return _glite_shares(polys, n)


def _glite_shares(polys: Sequence[Sequence[int]], n: int) -> list[str]:
    """Share x = 1..n: each chunk polynomial (constant term first) at x, as 4 hex digits."""
    shares = []
    for x in range(1, n + 1):
        values = []
        for poly in polys:
            acc = 0
            for coefficient in reversed(poly):
                acc = (acc * x + coefficient) % GLITE_PRIME
            values.append(f"{acc:04x}")
        shares.append("".join(values))
    return shares


def _glite_parse(tokens: Sequence[str | None]) -> dict[int, list[int]]:
    """x -> chunk values of the non-NULL positional shares, checked for form."""
    if len(tokens) >= GLITE_PRIME:
        raise InvalidShares(f"{len(tokens)} share positions: gLite allows at most 65520")
    parsed: dict[int, list[int]] = {}
    for x, token in enumerate(tokens, 1):
        if _is_null(token):
            continue
        text = (token or "").strip().lower()
        if not _HEX4.fullmatch(text):
            hint = (
                " (it looks like an MDM share: drop --format glite)"
                if text.startswith(_TAG)
                else ""
            )
            raise InvalidShares(f"share {x} is not a gLite share (hex digits, 4 per chunk){hint}")
        chunks = [int(text[i : i + 4], 16) for i in range(0, len(text), 4)]
        if any(c >= GLITE_PRIME for c in chunks):
            raise InvalidShares(f"share {x} has a value >= 65521: no gLite split makes that")
        parsed[x] = chunks
    lengths = {len(c) for c in parsed.values()}
    if len(lengths) > 1:
        raise InvalidShares("the shares have different lengths: they are not from one split")
    return parsed


def _lagrange_mod_p(points: dict[int, int], at: int) -> int:
    """Value at *at* of the polynomial through *points* over GF(65521)."""
    total = 0
    for xi, yi in points.items():
        num, den = 1, 1
        for xj in points:
            if xj != xi:
                num = num * (at - xj) % GLITE_PRIME
                den = den * (xi - xj) % GLITE_PRIME
        total = (total + yi * num * pow(den, -1, GLITE_PRIME)) % GLITE_PRIME
    return total


def glite_join(tokens: Sequence[str | None], threshold: int | None = None) -> bytes:
    """Join positional gLite shares (``NULL`` for a missing one, x = position) to the password.

    gLite shares carry no threshold, so "too few shares" cannot be told for sure. What is
    checked: at least 2 shares (at least *threshold* if given); with *threshold* and more
    shares than that, every extra share must lie on the polynomial of the first *threshold*
    (so a wrong share or a too-small threshold is caught); and the joined length prefix must
    match the share length exactly, with zero padding. A join from too few shares passes the
    last check only by chance (about 1 in 30 000 or less), never over-reads, and callers
    should then also check the result (the CLI requires valid UTF-8 text).

    Raises
    ------
    NotEnoughShares
        Fewer than 2 shares, or fewer than *threshold*.
    InvalidShares
        Malformed shares, shares inconsistent with *threshold*, or a joined value whose length
        prefix does not match (too few shares, or a wrong one).
    """
    parsed = _glite_parse(tokens)
    if threshold is not None and (isinstance(threshold, bool) or not 2 <= threshold <= 65520):
        raise UsageError(f"the threshold must be an integer >= 2, got {threshold!r}")
    need = threshold or 2
    if len(parsed) < need:
        raise NotEnoughShares(
            f"{len(parsed)} share(s) given, at least {need} needed"
            + ("" if threshold else " (give -t K to check against the real threshold)")
        )
    xs = sorted(parsed)
    width = len(parsed[xs[0]])
    basis, extra = (xs[:threshold], xs[threshold:]) if threshold else (xs, [])
    chunks = []
    for i in range(width):
        points = {x: parsed[x][i] for x in basis}
        for x in extra:
            if _lagrange_mod_p(points, x) != parsed[x][i]:
                raise InvalidShares(
                    f"share {x} is not on the polynomial of shares {basis}: a share is wrong,"
                    f" or the threshold is larger than {threshold}"
                )
        chunks.append(_lagrange_mod_p(points, 0))
    length = chunks[0]
    data = b"".join(c.to_bytes(2, "big") for c in chunks[1:])
    if len(data) != length + length % 2 or any(data[length:]):
        raise InvalidShares(
            "the joined value is not a gLite password (its length prefix does not match the"
            " shares): too few shares were given, or one is wrong"
        )
    return data[:length]
