"""Who may do what with a key on this server: versioned per-key ACLs plus server roles.

Rights per key are ``read`` (fetch the share) and ``admin`` (change the ACL, delete). The owner
(the DN that registered the key) holds both. A *creator* (configured DNs/FQANs) may register
keys; a server *admin* may do everything, and each use of that override is audited as such
(Hydra's HYDRA_CREATE / HYDRA_ADMIN, notes/keystore-and-crypto.md §1.5). Default deny.

An ACL is a versioned document. Its digest is computed here, by every server, from the key id,
the version, the previous digest and the canonical entries, so n servers given the same base
and the same entries reach the same digest, and a client can compare servers by digest alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mdm.acl import AclEntry, Identity, any_matches
from mdm.errors import UsageError

RIGHTS = ("read", "admin")
#: json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True), built once: the ACL
#: digests and the audit MACs of a batch registration encode one document per key, and dumps
#: would build an encoder per call. Canonical, so every server computes the same bytes.
CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
MAX_ENTRIES = 256


class Right(StrEnum):
    READ = "read"
    ADMIN = "admin"


def canonical_entries(entries: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Validate and normalise ``{principal: [rights]}``; principals parse as ``AclEntry``."""
    if not isinstance(entries, Mapping):
        raise UsageError("ACL entries must be an object {principal: [rights]}")
    if len(entries) > MAX_ENTRIES:
        raise UsageError(f"an ACL holds at most {MAX_ENTRIES} entries")
    out: dict[str, list[str]] = {}
    for principal, rights in entries.items():
        entry = str(AclEntry.parse(str(principal)))
        if isinstance(rights, str) or not isinstance(rights, Sequence):
            raise UsageError(f"rights of {entry} must be a list of {', '.join(RIGHTS)}")
        bad = [r for r in rights if r not in RIGHTS]
        if bad:
            raise UsageError(f"unknown right(s) {bad} for {entry}; known: {', '.join(RIGHTS)}")
        if rights:
            out[entry] = sorted(set(out.get(entry, [])) | set(rights))
    return dict(sorted(out.items()))


def acl_digest(key_id: str, version: int, prev: str, entries: Mapping[str, list[str]]) -> str:
    doc = {"key_id": key_id, "version": version, "prev": prev, "entries": entries}
    return hashlib.sha256(CANONICAL_JSON.encode(doc).encode()).hexdigest()


@dataclass(frozen=True)
class AclDocument:
    key_id: str
    version: int
    prev: str
    entries: dict[str, list[str]]
    digest: str

    @classmethod
    def build(
        cls, key_id: str, version: int, prev: str, entries: Mapping[str, Sequence[str]]
    ) -> AclDocument:
        canon = canonical_entries(entries)
        return cls(key_id, version, prev, canon, acl_digest(key_id, version, prev, canon))

    def grants(self, who: Identity, right: Right) -> bool:
        return any_matches((p for p, rights in self.entries.items() if right.value in rights), who)

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "prev": self.prev,
            "digest": self.digest,
            "entries": self.entries,
        }


@dataclass(frozen=True)
class ServerPolicy:
    """Server-wide roles from ``KeyServerSettings``."""

    admin_dns: tuple[str, ...] = ()
    admin_fqans: tuple[str, ...] = ()
    creator_dns: tuple[str, ...] = ()
    creator_fqans: tuple[str, ...] = ()

    def _names(self, dns: tuple[str, ...], fqans: tuple[str, ...]) -> list[str]:
        return [f"dn:{d}" for d in dns] + [f"fqan:{f}" for f in fqans]

    def is_admin(self, who: Identity) -> bool:
        return any_matches(self._names(self.admin_dns, self.admin_fqans), who)

    def may_create(self, who: Identity) -> bool:
        return self.is_admin(who) or any_matches(
            self._names(self.creator_dns, self.creator_fqans), who
        )


def decide(
    policy: ServerPolicy, who: Identity, owner: str, doc: AclDocument, right: Right
) -> str | None:
    """How *who* holds *right* on a key: ``"owner"``, ``"acl"``, ``"admin"`` or ``None``.

    ``"admin"`` is returned only when nothing else grants the right, so the audit log marks
    exactly the requests that needed the override.
    """
    if who.dn == owner:
        return "owner"
    if doc.grants(who, right):
        return "acl"
    if policy.is_admin(who):
        return "admin"
    return None
