"""The key servers as the client library sees them: access level 2 (content).

A thin layer over :class:`mdm.keystore.KeyStore` (which talks to all n servers in parallel,
keeps the first k verified shares and rebuilds the key): it adds what the high-level verbs need
on *many* keys at once. ``grant_all``/``revoke_all`` apply one ACL edit to every key of a study
and return, key by key, what succeeded and what did not, because a study-wide change that half
failed must be reported and retried, never silently dropped. Every server checks its own ACL
(no coordinator), so a grant takes effect once W = max(k, n-k+1) servers accepted it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mdm.errors import MDMError
from mdm.keystore import KeyStore, Retrieval, ServerStatus
from mdm.settings import Settings


@dataclass
class BulkAclResult:
    """Outcome of one ACL edit over many keys: done keys, and the error of each failed one."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, MDMError] = field(default_factory=dict)
    #: Keys that succeeded while some servers did not take the change: {key: [problem]}.
    degraded: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class KeysClient:
    """Fetch keys and edit key ACLs on the n key servers of ``settings.keystore``."""

    def __init__(self, settings: Settings, *, store: KeyStore | None = None) -> None:
        self._settings = settings
        self._store = store

    @property
    def store(self) -> KeyStore:
        """The ``KeyStore`` (created on first use: a level-1 user never needs key servers)."""
        if self._store is None:
            self._store = KeyStore(self._settings.keystore, tls=self._settings.tls)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def fetch(self, key_id: str) -> bytes:
        """The key rebuilt from k verified shares (``NotEnoughShares`` names each failure)."""
        return self.store.fetch(key_id)

    def retrieve(self, key_id: str) -> Retrieval:
        """``fetch`` with details: which servers were used, which failed and why."""
        return self.store.retrieve(key_id)

    def status(self) -> list[ServerStatus]:
        return self.store.status()

    def grant_all(
        self, key_ids: Iterable[str], principal: str, rights: Sequence[str] = ("read",)
    ) -> BulkAclResult:
        """Add *rights* for *principal* to the ACL of every key (in parallel, 8 at a time)."""
        return self._bulk(key_ids, lambda k: self.store.grant(k, principal, rights))

    def revoke_all(
        self, key_ids: Iterable[str], principal: str, rights: Sequence[str] | None = None
    ) -> BulkAclResult:
        """Remove *rights* (all when None) of *principal* from every key's ACL."""
        return self._bulk(key_ids, lambda k: self.store.revoke(k, principal, rights))

    def _bulk(self, key_ids: Iterable[str], edit: Any) -> BulkAclResult:
        result = BulkAclResult()
        keys = sorted(set(key_ids))
        if not keys:
            return result
        self._ensure_store()  # before the threads, which would race to create it
        with ThreadPoolExecutor(max_workers=min(8, len(keys)), thread_name_prefix="mdm-acl") as ex:
            futures = {key: ex.submit(edit, key) for key in keys}
        for key, fut in futures.items():
            try:
                acl = fut.result()
            except MDMError as exc:
                result.failed[key] = exc
                continue
            result.done.append(key)
            if acl.problems:
                result.degraded[key] = [str(p) for p in acl.problems.values()]
        return result

    def _ensure_store(self) -> KeyStore:
        return self.store


__all__ = ["BulkAclResult", "KeysClient"]
