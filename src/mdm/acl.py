"""Who is calling, and ACL entries that name callers: the vocabulary every MDM server shares.

An ``Identity`` is what a server knows about a verified caller: the end-entity DN (proxies
stripped) and the VOMS FQANs taken only from attribute certificates whose signature, validity
and holder were verified. An ACL entry is ``dn:<DN>`` or ``fqan:/vo[/group...][/Role=r]``.

FQAN matching follows VOMS semantics: membership of ``/vo/a/b`` implies membership of its parent
groups ``/vo/a`` and ``/vo`` (VOMS issues those FQANs too, but proxies made by hand may not); a
role entry ``/vo/a/Role=r`` matches only a caller holding that role *in that group*. An entry
without a role matches a caller's FQAN of the same group whatever its role (the role is an extra
capability, not a different group). ``Role=NULL`` and ``Capability=NULL`` are normalised away.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mdm.errors import UsageError

#: ASGI scope extension key under which MDM's TLS layer puts the verified ``Identity``.
SCOPE_KEY = "mdm.identity"


def normalize_fqan(fqan: str) -> str:
    """``/vo/g/Role=NULL/Capability=NULL`` -> ``/vo/g``; ``/vo/g/Role=r`` kept as is."""
    parts = [p for p in fqan.strip().split("/") if p]
    out = []
    for p in parts:
        if p in ("Role=NULL", "Capability=NULL") or p.startswith("Capability="):
            continue
        out.append(p)
    if not out or "=" in out[0]:
        raise UsageError(f"not a VOMS FQAN: {fqan!r}")
    return "/" + "/".join(out)


def _split(fqan: str) -> tuple[tuple[str, ...], str | None]:
    groups: list[str] = []
    role: str | None = None
    for p in normalize_fqan(fqan).strip("/").split("/"):
        if p.startswith("Role="):
            role = p[len("Role=") :]
        else:
            groups.append(p)
    return tuple(groups), role


@dataclass(frozen=True)
class Identity:
    """A verified caller. ``anonymous`` when no verified certificate reached the server."""

    dn: str
    fqans: tuple[str, ...] = ()
    issuer: str = ""
    is_proxy: bool = False
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def vo(self) -> str | None:
        return self.fqans[0].strip("/").split("/")[0] if self.fqans else None

    def principals(self) -> list[str]:
        """ACL entries this caller satisfies directly (for display; matching uses ``matches``)."""
        return [f"dn:{self.dn}"] + [f"fqan:{f}" for f in self.fqans]


@dataclass(frozen=True)
class AclEntry:
    kind: str  # "dn" or "fqan"
    value: str

    @classmethod
    def parse(cls, text: str) -> AclEntry:
        kind, sep, value = text.partition(":")
        if not sep or kind not in ("dn", "fqan") or not value.strip():
            raise UsageError(f"ACL entry must be 'dn:<DN>' or 'fqan:/vo/...': {text!r}")
        if kind == "fqan":
            return cls("fqan", normalize_fqan(value))
        return cls("dn", value.strip())

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    def matches(self, who: Identity) -> bool:
        if self.kind == "dn":
            return who.dn == self.value
        want_groups, want_role = _split(self.value)
        for fqan in who.fqans:
            groups, role = _split(fqan)
            if groups[: len(want_groups)] != want_groups:
                continue
            if want_role is None:
                return True
            if role == want_role and groups == want_groups:
                return True
        return False


def any_matches(entries: Iterable[str | AclEntry], who: Identity) -> bool:
    """True when one of *entries* names *who* (default deny: an empty list matches nobody)."""
    for e in entries:
        entry = e if isinstance(e, AclEntry) else AclEntry.parse(e)
        if entry.matches(who):
            return True
    return False
