"""What a key server tells about one key: ``KeyView``, built from a stored row.

The same view answers a registration (without the share), a fetch (with it) and a metadata
read. It is built from either an ORM ``KeyRecord`` or a Core row of ``key_shares`` (the batch
registration reads rows, not ORM objects): both expose the columns as attributes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Protocol

from mdm.keyserver.policy import AclDocument


class StoredKey(Protocol):
    """The columns of ``key_shares`` a view needs (``KeyRecord`` or a Core row)."""

    @property
    def key_id(self) -> str: ...
    @property
    def slot(self) -> int: ...
    @property
    def share_hashes(self) -> str: ...
    @property
    def k(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def kcv(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def acl_version(self) -> int: ...
    @property
    def acl_prev(self) -> str: ...
    @property
    def acl_entries(self) -> str: ...
    @property
    def acl_digest(self) -> str: ...


@dataclass(frozen=True)
class KeyView:
    """What a server tells about one key; ``share`` only on fetch."""

    key_id: str
    slot: int
    share_hashes: list[str]
    k: int
    n: int
    kcv: str
    owner: str
    acl: AclDocument
    share: bytes | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "key_id": self.key_id,
            "slot": self.slot,
            "share_hashes": self.share_hashes,
            "k": self.k,
            "n": self.n,
            "kcv": self.kcv,
            "owner": self.owner,
            "acl": self.acl.to_json(),
        }
        if self.share is not None:
            out["share"] = base64.b64encode(self.share).decode()
        return out


def acl_of(rec: StoredKey) -> AclDocument:
    """The stored ACL document (its digest as stored, not recomputed)."""
    entries = json.loads(rec.acl_entries)
    return AclDocument(rec.key_id, rec.acl_version, rec.acl_prev, entries, rec.acl_digest)


def view_of(rec: StoredKey, share: bytes | None = None) -> KeyView:
    return KeyView(
        rec.key_id,
        rec.slot,
        json.loads(rec.share_hashes),
        rec.k,
        rec.n,
        rec.kcv,
        rec.owner,
        acl_of(rec),
        share,
    )
