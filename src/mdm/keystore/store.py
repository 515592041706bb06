"""``KeyStore``: register, fetch and manage split keys over n key servers, no coordinator.

Every operation talks to all n servers in parallel (one thread per server call, keep-alive
connections) and decides from the answers:

* ``register``: succeeds with at least ``write_quorum`` acknowledgements (default k+1, so the
  key survives one more loss); otherwise the shares written are deleted again and
  ``QuorumNotReached`` (k or more acks) or ``NotEnoughShares`` (fewer than k) is raised.
* ``fetch``: returns as soon as k shares verify against the share-hash vector and the rebuilt
  key matches its check value; a wrong share is located and its server named.
* ``set_acl``/``grant``/``revoke``: compare-and-swap with W = max(k, n-k+1), retried with
  jittered backoff when a concurrent writer won.
* ``repair``/``scan``: for maintainers (server admin role).
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from mdm.errors import (
    ConfigError,
    MDMError,
    NotEnoughShares,
    from_problem,
)
from mdm.keystore import acl as aclmod
from mdm.keystore import batch, maintenance
from mdm.keystore.maintenance import Divergence, RepairResult, ServerStatus
from mdm.keystore.servers import ServerProblem, Servers
from mdm.keystore.shares import Meta, Recovery, recover
from mdm.settings import KeyStoreSettings, TlsSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 100  # key ids per POST /v1/fetch (the server's limit)


@dataclass(frozen=True)
class RegisterResult:
    key_id: str
    acked: tuple[int, ...]
    problems: dict[int, ServerProblem] = field(default_factory=dict)


@dataclass(frozen=True)
class Retrieval:
    """A fetched key, the slots combined, and every server that failed or lied (and why)."""

    key: bytes = field(repr=False)
    used: tuple[int, ...]
    problems: dict[int, ServerProblem]
    owner: str = ""
    acl: aclmod.AclState | None = None
    meta: Meta | None = None
    shares: dict[int, bytes] = field(default_factory=dict, repr=False)  # the slots in used

    @property
    def bad_servers(self) -> dict[int, ServerProblem]:
        return {s: p for s, p in self.problems.items() if p.reason == "corrupt"}


class KeyStore:
    """The client of the n key servers named in ``KeyStoreSettings.servers`` (slot = index+1)."""

    def __init__(
        self,
        settings: KeyStoreSettings,
        *,
        tls: TlsSettings | None = None,
        clients: Sequence[httpx.Client] | None = None,
        acl_attempts: int = 8,
    ) -> None:
        self.servers = Servers(settings, tls=tls, clients=clients)
        self.n = self.servers.n
        self.k = settings.threshold
        if not 2 <= self.k <= self.n:
            raise ConfigError(
                f"keystore.threshold={self.k} needs 2 <= k <= n={self.n} servers",
                key="keystore.threshold",
            )
        self.write_quorum = settings.write_quorum or min(self.k + 1, self.n)
        if not self.k <= self.write_quorum <= self.n:
            raise ConfigError(
                f"keystore.write_quorum={self.write_quorum} must be in k..n = {self.k}..{self.n}",
                key="keystore.write_quorum",
            )
        self.acl_quorum = aclmod.write_quorum(self.n, self.k)
        self.acl_attempts = acl_attempts
        self.register_batch = max(1, settings.register_batch)
        self._pool = ThreadPoolExecutor(max_workers=2 * self.n, thread_name_prefix="mdm-keystore")

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # stragglers end within timeout
        self.servers.close()

    # -- fan-out ------------------------------------------------------------------------------

    def _submit(self, slots: Iterable[int], fn: Callable[[int], T]) -> dict[Future[T], int]:
        return {self._pool.submit(fn, slot): slot for slot in slots}

    def _all(
        self, slots: Iterable[int], fn: Callable[[int], T]
    ) -> tuple[dict[int, T], dict[int, ServerProblem]]:
        ok: dict[int, T] = {}
        problems: dict[int, ServerProblem] = {}
        for fut, slot in self._submit(slots, fn).items():
            try:
                ok[slot] = fut.result()
            except MDMError as exc:
                problems[slot] = self.servers.problem(slot, exc)
        return ok, problems

    def _describe(self, problems: Mapping[int, ServerProblem]) -> str:
        return "; ".join(str(problems[s]) for s in sorted(problems)) or "no server answered"

    # -- register -----------------------------------------------------------------------------

    def register(
        self,
        key_id: str,
        key: bytes,
        acl: Mapping[str, Sequence[str]] | None = None,
    ) -> RegisterResult:
        """Split *key* and store share x on server x; see the module docstring for quorums."""
        prepared = batch.prepare(key_id, key, acl, n=self.n, k=self.k)

        def put(slot: int) -> Any:
            body = prepared.body(slot)
            return self.servers.call(slot, "PUT", f"/v1/keys/{key_id}/share", json=body)

        acked, problems = self._all(range(1, self.n + 1), put)
        if len(acked) >= self.write_quorum:
            if problems:
                log.warning(
                    "key %s registered on %d/%d servers: %s",
                    key_id,
                    len(acked),
                    self.n,
                    self._describe(problems),
                )
            return RegisterResult(key_id, tuple(sorted(acked)), problems)
        self._rollback(key_id, acked)
        raise batch.below_quorum(self, key_id, sorted(acked), problems)

    def register_many(
        self, items: Iterable[batch.RegisterItem]
    ) -> dict[str, RegisterResult | MDMError]:
        """Register ``(key_id, key, acl)`` items, ``keystore.register_batch`` per request.

        Same quorum and rollback rules as ``register``, applied to each key on its own: the
        result maps each key id to its ``RegisterResult`` or to the error it alone failed with
        (``mdm.keystore.batch``).
        """
        return batch.register_many(self, items)

    def discard(self, key_id: str, slots: Iterable[int] | None = None) -> None:
        """Take back a key registered moments ago and never used (no tombstone is left, so
        nothing records it; needs the owner and an unchanged ACL, as a failed register)."""
        self._rollback(key_id, range(1, self.n + 1) if slots is None else slots)

    def _rollback(self, key_id: str, slots: Iterable[int]) -> None:
        def delete(slot: int) -> Any:
            return self.servers.call(slot, "DELETE", f"/v1/keys/{key_id}", params={"rollback": "1"})

        _, problems = self._all(slots, delete)
        if problems:
            log.error("rollback of key %s left shares behind: %s", key_id, self._describe(problems))

    # -- fetch --------------------------------------------------------------------------------

    def fetch(self, key_id: str) -> bytes:
        """The key, rebuilt from k verified shares (``NotEnoughShares`` names each failure)."""
        return self.retrieve(key_id).key

    def retrieve(self, key_id: str, *, wait_all: bool = False) -> Retrieval:
        """Like ``fetch`` with the details; *wait_all* also checks the slower servers' shares."""

        def get(slot: int) -> Any:
            return self.servers.call(slot, "GET", f"/v1/keys/{key_id}/share")

        shares: dict[int, bytes] = {}
        metas: dict[int, Meta] = {}
        views: dict[int, Any] = {}
        problems: dict[int, ServerProblem] = {}
        found: Recovery | None = None
        futures = self._submit(range(1, self.n + 1), get)
        for fut in as_completed(futures):
            slot = futures[fut]
            try:
                view = fut.result()
            except MDMError as exc:
                problems[slot] = self.servers.problem(slot, exc)
                continue
            if self._accept(slot, view, shares, metas, views, problems):
                if found is None and len(shares) >= min(m.k for m in metas.values()):
                    found = recover(key_id, shares, metas)
                if found is not None and not wait_all:
                    break
        return self._conclude(key_id, shares, metas, views, problems)

    def fetch_many(self, key_ids: Sequence[str]) -> dict[str, Retrieval | NotEnoughShares]:
        """Several keys with one request per server per 100 keys (``POST /v1/fetch``).

        Each server authorizes and audits every key on its own; each key is then rebuilt and
        verified like ``retrieve(wait_all=True)``. A key that cannot be rebuilt maps to its
        ``NotEnoughShares`` instead of failing the others.
        """
        out: dict[str, Retrieval | NotEnoughShares] = {}
        ids = list(dict.fromkeys(key_ids))
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]

            def post(slot: int, chunk: list[str] = chunk) -> Any:
                return self.servers.call(slot, "POST", "/v1/fetch", json={"key_ids": chunk})

            answers, down = self._all(range(1, self.n + 1), post)
            per_slot = {
                slot: {str(r.get("key_id")): r for r in body.get("results", [])}
                for slot, body in answers.items()
            }
            for key_id in chunk:
                shares: dict[int, bytes] = {}
                metas: dict[int, Meta] = {}
                views: dict[int, Any] = {}
                problems = dict(down)
                for slot, results in per_slot.items():
                    res = results.get(key_id)
                    if res is None or not res.get("ok"):
                        err = from_problem((res or {}).get("error") or {}, 500)
                        problems[slot] = self.servers.problem(slot, err)
                        continue
                    self._accept(slot, res, shares, metas, views, problems)
                try:
                    out[key_id] = self._conclude(key_id, shares, metas, views, problems)
                except NotEnoughShares as exc:
                    out[key_id] = exc
        return out

    def _accept(
        self,
        slot: int,
        view: Any,
        shares: dict[int, bytes],
        metas: dict[int, Meta],
        views: dict[int, Any],
        problems: dict[int, ServerProblem],
    ) -> bool:
        """Parse one server's share answer into the maps; a malformed one is a problem."""
        try:
            share = base64.b64decode(view["share"], validate=True)
            meta = Meta(
                tuple(view["share_hashes"]), int(view["k"]), int(view["n"]), str(view["kcv"])
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            problems[slot] = ServerProblem(slot, self.servers.url(slot), "corrupt", "malformed")
            return False
        shares[slot], metas[slot], views[slot] = share, meta, view
        return True

    def _conclude(
        self,
        key_id: str,
        shares: dict[int, bytes],
        metas: dict[int, Meta],
        views: dict[int, Any],
        problems: dict[int, ServerProblem],
    ) -> Retrieval:
        found = recover(key_id, shares, metas) if shares else None
        if found is None:
            raise NotEnoughShares(
                f"key {key_id}: {len(shares)} share(s) received, {self.k} verified ones "
                f"needed. {self._describe(problems)}",
                key_id=key_id,
                failures={s: p.reason for s, p in problems.items()},
            )
        for slot, why in found.bad.items():
            problems[slot] = ServerProblem(slot, self.servers.url(slot), "corrupt", why)
            log.warning(
                "key server %d (%s) %s for key %s", slot, self.servers.url(slot), why, key_id
            )
        view = views[found.used[0]]
        owner = str(view.get("owner", ""))
        state = aclmod.AclState.from_json(view["acl"], owner)
        used = {slot: shares[slot] for slot in found.used}
        return Retrieval(found.key, found.used, problems, owner, state, found.meta, used)

    # -- ACL ----------------------------------------------------------------------------------

    def read_acls(self, key_id: str) -> tuple[dict[int, aclmod.AclState], dict[int, ServerProblem]]:
        """Each reachable server's ACL document for *key_id*."""
        return aclmod.read(self, key_id)

    def get_acl(self, key_id: str) -> aclmod.AclResult:
        """The ACL most servers hold (needs R = n - W + 1 answers)."""
        return aclmod.current(self, key_id)

    def update_acl(self, key_id: str, edit: aclmod.Edit) -> aclmod.AclResult:
        """Read, edit, compare-and-swap on all servers; retry when a concurrent writer won."""
        return aclmod.update(self, key_id, edit)

    def set_acl(self, key_id: str, entries: Mapping[str, Sequence[str]]) -> aclmod.AclResult:
        return self.update_acl(key_id, aclmod.replace(entries))

    def grant(
        self, key_id: str, principal: str, rights: Sequence[str] = ("read",)
    ) -> aclmod.AclResult:
        return self.update_acl(key_id, aclmod.grant(principal, rights))

    def revoke(
        self, key_id: str, principal: str, rights: Sequence[str] | None = None
    ) -> aclmod.AclResult:
        return self.update_acl(key_id, aclmod.revoke(principal, rights))

    def delete(self, key_id: str) -> dict[int, ServerProblem]:
        """Destroy every share (admin right); returns the servers that did not confirm."""
        _, problems = self._all(
            range(1, self.n + 1),
            lambda slot: self.servers.call(slot, "DELETE", f"/v1/keys/{key_id}"),
        )
        return problems

    # -- maintenance (mdm.keystore.maintenance) -----------------------------------------------

    def repair(self, key_id: str) -> RepairResult:
        """Re-create missing or bad shares on the servers that lost them (server admins)."""
        return maintenance.repair(self, key_id)

    def scan(self) -> tuple[list[Divergence], dict[int, ServerProblem]]:
        """Keys whose shares or ACL versions differ across the reachable servers (admins)."""
        return maintenance.scan(self)

    def status(self) -> list[ServerStatus]:
        """Reachability, slot check and latency of each server."""
        return maintenance.status(self)


def new_key() -> bytes:
    """A fresh 32-byte data key from the OS CSPRNG."""
    return secrets.token_bytes(32)
