"""Client side of the versioned per-key ACL: choosing the base, and grant/revoke as edits.

There is no coordinator. A writer reads the ACL from every server it can reach, takes the
newest version (most holders first, then the smallest digest, so two writers pick the same
base), applies its edit and compare-and-swaps version+1 onto every server. It succeeds when
W = max(k, n-k+1) servers accept: a grant is then on at least k servers, and after a revoke at
most k-1 servers still grant, which is not enough to rebuild the key
(notes/keystore-and-crypto.md §5.2).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mdm.acl import AclEntry
from mdm.errors import QuorumNotReached, UsageError, VersionConflict
from mdm.keystore.servers import ServerProblem

if TYPE_CHECKING:
    from mdm.keystore.store import KeyStore

log = logging.getLogger(__name__)
RIGHTS = ("read", "admin")
Entries = dict[str, list[str]]
Edit = Callable[[Entries], Entries]


@dataclass(frozen=True)
class AclState:
    """One server's ACL document as it answered."""

    version: int
    prev: str
    digest: str
    entries: Entries
    owner: str = ""

    @classmethod
    def from_json(cls, doc: Mapping[str, object], owner: str = "") -> AclState:
        raw = doc.get("entries") or {}
        entries = {str(p): sorted(str(r) for r in rs) for p, rs in dict(raw).items()}  # type: ignore[call-overload]
        return cls(
            int(doc["version"]),  # type: ignore[call-overload]
            str(doc.get("prev", "")),
            str(doc["digest"]),
            entries,
            owner,
        )


@dataclass(frozen=True)
class AclResult:
    """The ACL after a successful write, and which servers hold it."""

    key_id: str
    version: int
    digest: str
    entries: Entries
    acked: tuple[int, ...]
    problems: dict[int, str] = field(default_factory=dict)


def write_quorum(n: int, k: int) -> int:
    return max(k, n - k + 1)


def choose_base(states: Mapping[int, AclState]) -> AclState:
    newest = max(s.version for s in states.values())
    holders: dict[str, list[AclState]] = {}
    for s in states.values():
        if s.version == newest:
            holders.setdefault(s.digest, []).append(s)
    best = sorted(holders.items(), key=lambda kv: (-len(kv[1]), kv[0]))[0]
    return best[1][0]


def normalize_principal(principal: str) -> str:
    return str(AclEntry.parse(principal))


def check_rights(rights: Iterable[str]) -> list[str]:
    out = sorted(set(rights))
    bad = [r for r in out if r not in RIGHTS]
    if bad or not out:
        raise UsageError(f"rights must be some of {', '.join(RIGHTS)}, got {out}")
    return out


def grant(principal: str, rights: Sequence[str] = ("read",)) -> Edit:
    who, add = normalize_principal(principal), check_rights(rights)

    def edit(entries: Entries) -> Entries:
        out = {p: list(r) for p, r in entries.items()}
        out[who] = sorted(set(out.get(who, [])) | set(add))
        return out

    return edit


def revoke(principal: str, rights: Sequence[str] | None = None) -> Edit:
    """Remove *rights* (all rights when ``None``) of *principal*."""
    who = normalize_principal(principal)
    drop = set(check_rights(rights)) if rights is not None else set(RIGHTS)

    def edit(entries: Entries) -> Entries:
        out = {p: list(r) for p, r in entries.items()}
        left = sorted(set(out.get(who, [])) - drop)
        if left:
            out[who] = left
        else:
            out.pop(who, None)
        return out

    return edit


def replace(new: Mapping[str, Sequence[str]]) -> Edit:
    canon = {normalize_principal(p): check_rights(r) for p, r in new.items()}

    def edit(_entries: Entries) -> Entries:
        return dict(canon)

    return edit


# -- the protocol over the n servers (used by KeyStore) -----------------------------------


def read(store: KeyStore, key_id: str) -> tuple[dict[int, AclState], dict[int, ServerProblem]]:
    def get(slot: int) -> AclState:
        body = store.servers.call(slot, "GET", f"/v1/keys/{key_id}/acl")
        return AclState.from_json(body["acl"], str(body.get("owner", "")))

    return store._all(range(1, store.n + 1), get)


def current(store: KeyStore, key_id: str) -> AclResult:
    """The ACL most servers hold (needs R = n - W + 1 answers)."""
    states, problems = read(store, key_id)
    _need_read_quorum(store, key_id, states, problems)
    base = choose_base(states)
    holders = tuple(sorted(s for s, st in states.items() if st.digest == base.digest))
    return AclResult(
        key_id,
        base.version,
        base.digest,
        base.entries,
        holders,
        {s: str(p) for s, p in problems.items()},
    )


def _need_read_quorum(
    store: KeyStore,
    key_id: str,
    states: Mapping[int, object],
    problems: Mapping[int, ServerProblem],
) -> None:
    need = store.n - store.acl_quorum + 1
    if len(states) < need:
        raise QuorumNotReached(
            f"key {key_id}: {len(states)} of {store.n} servers returned the ACL, {need} "
            f"needed. {store._describe(problems)}",
            key_id=key_id,
            failures={s: p.reason for s, p in problems.items()},
        )


def update(store: KeyStore, key_id: str, edit: Edit) -> AclResult:
    """Read, edit, compare-and-swap on all servers; retry when a concurrent writer won."""
    problems: dict[int, ServerProblem] = {}
    for attempt in range(store.acl_attempts):
        states, problems = read(store, key_id)
        _need_read_quorum(store, key_id, states, problems)
        base = choose_base(states)
        target = {
            "version": base.version + 1,
            "prev": base.digest,
            "entries": edit(base.entries),
        }

        def put(
            slot: int,
            states: Mapping[int, AclState] = states,
            base: AclState = base,
            target: Mapping[str, Any] = target,
        ) -> Any:
            # CAS against what this server held when we read it (a server holding a
            # losing sibling of the base rolls forward); unread servers: the base.
            cur = states.get(slot, base)
            body = {"if_match": {"version": cur.version, "digest": cur.digest}, "acl": target}
            return store.servers.call(slot, "PUT", f"/v1/keys/{key_id}/acl", json=body)

        acked, problems = store._all(range(1, store.n + 1), put)
        if len(acked) >= store.acl_quorum:
            doc = next(iter(acked.values()))["acl"]
            return AclResult(
                key_id,
                int(doc["version"]),
                str(doc["digest"]),
                dict(doc["entries"]),
                tuple(sorted(acked)),
                {s: str(p) for s, p in problems.items()},
            )
        if not any(p.reason == "conflict" for p in problems.values()):
            break  # not a race: servers down or refusing; retrying will not help
        time.sleep(random.uniform(0.005, 0.03) * (2 ** min(attempt, 4)))  # noqa: S311
        log.info("ACL write on %s lost a race (attempt %d), retrying", key_id, attempt + 1)
    failures = {s: p.reason for s, p in problems.items()}
    if any(r == "conflict" for r in failures.values()):
        raise VersionConflict(
            f"key {key_id}: the ACL kept changing under us after {store.acl_attempts} "
            f"attempts. {store._describe(problems)}",
            key_id=key_id,
            failures=failures,
        )
    raise QuorumNotReached(
        f"key {key_id}: fewer than {store.acl_quorum} servers accepted the ACL change. "
        f"{store._describe(problems)}",
        key_id=key_id,
        failures=failures,
    )
