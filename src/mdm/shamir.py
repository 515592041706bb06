"""Shamir's secret sharing over GF(2^8), byte by byte, in the HashiCorp Vault share layout.

Each byte of the secret is the constant term of its own random polynomial of degree k-1 over
GF(2^8) with the AES reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11B); share *x* holds the
value of every polynomial at *x*. A share serializes as ``y-bytes || x-byte``, the layout of
Vault's ``shamir`` package and of ``pyshamir``, so that shares can be combined with either in an
emergency. Unlike Vault, the caller fixes *x* (a key server's slot, 1..n by default): *x* is
public anyway, and a fixed slot makes repair and audit deterministic
(notes/keystore-and-crypto.md §3).

Integrity is **not** this module's job. Plain Shamir cannot tell that it was given too few
shares or a corrupted one: :func:`combine` then returns a wrong secret without complaint. Callers
must verify the result: the key store checks each share against the share-hash vector and the
rebuilt key against the Cobblestone key commitment, and :mod:`mdm.ssss` shares an extended
secret that carries its own digest.

Side channels: secret bytes never select a branch or index a table. The arithmetic is done
lane-parallel on Python integers holding all bytes of a secret at once (one 8-bit lane per
byte), with shifts, masks and XOR only; multiplications are by *public* values (share
coordinates and Lagrange coefficients). CPython gives no constant-time guarantee for integer
operations, so this is a best effort, not a proof.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache

from mdm.errors import InvalidShares, NotEnoughShares, UsageError

__all__ = ["MAX_SHARES", "Share", "combine", "split"]

#: x is one byte and x = 0 would be the secret itself.
MAX_SHARES = 255
_POLY = 0x11B


@dataclass(frozen=True, slots=True)
class Share:
    """One share: the public coordinate ``x`` (1..255) and the secret values ``y``.

    ``repr`` never shows ``y``: a share is key material.
    """

    x: int
    y: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.x, int) or not 1 <= self.x <= MAX_SHARES:
            raise InvalidShares(f"share x must be an integer in 1..255, got {self.x!r}")
        if not isinstance(self.y, bytes | bytearray) or not self.y:
            raise InvalidShares("share value must be at least one byte")
        object.__setattr__(self, "y", bytes(self.y))

    def to_bytes(self) -> bytes:
        """Vault layout: the y bytes followed by the x byte."""
        return self.y + bytes([self.x])

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse the Vault layout (``pyshamir.split`` output included)."""
        if len(data) < 2:
            raise InvalidShares(f"a share is at least 2 bytes (y || x), got {len(data)}")
        return cls(x=data[-1], y=bytes(data[:-1]))


# -- GF(2^8) arithmetic -------------------------------------------------------------------------


def _gf_mul(a: int, b: int) -> int:
    """Branch-free product in GF(2^8) (Vault's loop): no table, no data-dependent branch."""
    r = 0
    for i in range(7, -1, -1):
        r = (-((b >> i) & 1) & a) ^ (-(r >> 7) & _POLY) ^ (r << 1)
    return r


def _gf_inv(a: int) -> int:
    """a^254 = a^-1 for a != 0 (Fermat), by a fixed square-and-multiply chain."""
    result, power = 1, a
    for _ in range(7):  # 254 = 0b11111110: multiply in a^2, a^4, ..., a^128
        power = _gf_mul(power, power)
        result = _gf_mul(result, power)
    return result


@cache
def _masks(length: int) -> tuple[int, int]:
    """(0xFEFE..FE, 0x0101..01) for *length* lanes."""
    ones = int.from_bytes(b"\x01" * length, "big")
    return ones * 0xFE, ones


def _vec_mul(v: int, c: int, length: int) -> int:
    """Multiply every byte lane of *v* by the public scalar *c* in GF(2^8).

    Russian-peasant multiplication where each doubling (``xtime``) acts on all lanes at once:
    shift left, drop each lane's carry, and fold it back in as 0x1B. The secret only meets
    shifts, masks and XOR.
    """
    high, ones = _masks(length)
    r = 0
    for i in range(7, -1, -1):
        r = ((r << 1) & high) ^ (((r >> 7) & ones) * 0x1B)
        r ^= v & -((c >> i) & 1)
    return r


@lru_cache(maxsize=1024)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients l_i(0) = prod_{j != i} x_j / (x_j - x_i); subtraction is XOR in GF(2^8).

    They depend on the public coordinates only, so caching them is safe: a client combines
    the same few slot subsets over and over.
    """
    coefficients = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = _gf_mul(num, xj)
                den = _gf_mul(den, xj ^ xi)
        coefficients.append(_gf_mul(num, _gf_inv(den)))
    return tuple(coefficients)


# -- split and combine --------------------------------------------------------------------------


def _coordinates(length: int, n: int, k: int, xs: Iterable[int] | None) -> list[int]:
    """Validate the split parameters and return the share coordinates."""
    if length < 1:
        raise UsageError("the secret must not be empty")
    for name, value in (("n", n), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} must be an integer, got {value!r}")
    if not 2 <= k <= n <= MAX_SHARES:
        raise UsageError(f"need 2 <= k <= n <= 255, got n={n} k={k}")
    xs = list(range(1, n + 1)) if xs is None else list(xs)
    if len(xs) != n:
        raise UsageError(f"got {len(xs)} share coordinates for n={n} shares")
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_SHARES:
            raise UsageError(f"share coordinates must be integers in 1..255, got {x!r}")
    if len(set(xs)) != len(xs):
        raise UsageError(f"share coordinates must be distinct, got {sorted(xs)}")
    return xs


def split(secret: bytes, n: int, k: int, xs: Iterable[int] | None = None) -> list[Share]:
    """Split *secret* into *n* shares, any *k* of which rebuild it.

    Parameters
    ----------
    secret:
        Any non-empty byte string (a 32-byte file key in practice).
    n, k:
        Number of shares and threshold, ``2 <= k <= n <= 255``.
    xs:
        The share coordinates, one per share, distinct, in 1..255. Default ``1..n``. The key
        store passes each key server's slot so that share *x* always lives on server *x*.

    Returns
    -------
    list[Share]
        In the order of *xs*. Fewer than *k* of them are independent of the secret.

    Raises
    ------
    UsageError
        Empty secret, bad *n*/*k*, or bad coordinates.
    """
    secret = bytes(secret)
    length = len(secret)
    coords = _coordinates(length, n, k, xs)
    # Coefficient j of every byte's polynomial, as one lane-parallel integer; uniform from the
    # OS CSPRNG (a zero leading coefficient is allowed: the polynomials must be uniform).
    terms = [int.from_bytes(secret, "big")]
    terms += [int.from_bytes(secrets.token_bytes(length), "big") for _ in range(k - 1)]
    shares = []
    for x in coords:
        acc = terms[-1]
        for term in reversed(terms[:-1]):  # Horner: f(x) = (..(a_{k-1} x + a_{k-2}) x ..) + a_0
            acc = _vec_mul(acc, x, length) ^ term
        shares.append(Share(x=x, y=acc.to_bytes(length, "big")))
    return shares


def combine(shares: Iterable[Share]) -> bytes:
    """Rebuild the secret from shares by Lagrange interpolation at 0.

    Give it at least *k* shares of one split; more are fine. With fewer than *k*, or with a
    wrong share, the result is a wrong secret and **no error** is raised: verify the result
    (see the module docstring).

    Raises
    ------
    NotEnoughShares
        Fewer than 2 shares (no threshold is below 2).
    InvalidShares
        Shares of different lengths, or two shares with the same x.
    """
    items = list(shares)
    for item in items:
        if not isinstance(item, Share):
            raise InvalidShares(f"expected Share objects, got {type(item).__name__}")
    if len(items) < 2:
        raise NotEnoughShares(f"need at least 2 shares to combine, got {len(items)}")
    lengths = {len(s.y) for s in items}
    if len(lengths) != 1:
        raise InvalidShares(f"shares have different lengths {sorted(lengths)}: not one split")
    xs = [s.x for s in items]
    if len(set(xs)) != len(xs):
        dupes = sorted({x for x in xs if xs.count(x) > 1})
        raise InvalidShares(f"duplicate share x {dupes}: each share may be given once")
    length = lengths.pop()
    secret = 0
    for share, coefficient in zip(items, _lagrange_at_zero(tuple(xs)), strict=True):
        secret ^= _vec_mul(int.from_bytes(share.y, "big"), coefficient, length)
    return secret.to_bytes(length, "big")
