"""Maintenance over the n key servers: repair lost shares, scan for divergence, server status.

For maintainers holding the key-server admin role on every server. ``repair`` rebuilds the
key on the maintainer's host (as a fetch does) and recomputes each lost share on the *same*
polynomial (``shares.share_at``), so the shares the other servers hold stay valid and the
share-hash vector is unchanged; each server audits the upload as a repair. The privacy-preserving
alternative (masked Lagrange shares sent server to server, no host ever sees the key) needs
server-to-server channels and is not implemented (notes/keystore-and-crypto.md §5.2).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mdm.errors import MDMError
from mdm.keystore.servers import ServerProblem
from mdm.keystore.shares import share_at
from mdm.shamir import Share

if TYPE_CHECKING:
    from mdm.keystore.store import KeyStore


@dataclass(frozen=True)
class RepairResult:
    key_id: str
    repaired: tuple[int, ...]
    problems: dict[int, ServerProblem]


@dataclass(frozen=True)
class ServerStatus:
    slot: int
    url: str
    ok: bool
    latency_ms: float
    detail: str


@dataclass(frozen=True)
class Divergence:
    """A key whose servers disagree: missing shares, or different metadata or ACL versions."""

    key_id: str
    missing: tuple[int, ...]
    acl_versions: dict[int, int]
    differing: tuple[int, ...]


def repair(store: KeyStore, key_id: str) -> RepairResult:
    got = store.retrieve(key_id, wait_all=True)
    targets = sorted(s for s, p in got.problems.items() if p.reason in ("missing", "corrupt"))
    if not targets or got.meta is None:
        return RepairResult(key_id, (), got.problems)
    meta, acl = got.meta, got.acl
    basis = [Share.from_bytes(got.shares[s]) for s in got.used]

    def put(slot: int) -> Any:
        body = {
            "slot": slot,
            "share": base64.b64encode(share_at(basis, slot).to_bytes()).decode(),
            "share_hashes": list(meta.share_hashes),
            "k": meta.k,
            "n": meta.n,
            "kcv": meta.kcv,
            "repair": True,
            "owner": got.owner,
            "acl": {"version": acl.version, "prev": acl.prev, "entries": acl.entries}
            if acl
            else {},
        }
        return store.servers.call(slot, "PUT", f"/v1/keys/{key_id}/share", json=body)

    done, problems = store._all(targets, put)
    left = {s: p for s, p in got.problems.items() if s not in done}
    left.update(problems)
    return RepairResult(key_id, tuple(sorted(done)), left)


def list_keys(store: KeyStore, slot: int, *, page: int = 500) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = ""
    while True:
        body = store.servers.call(
            slot, "GET", "/v1/keys", params={"after": after, "limit": str(page)}
        )
        out += body["keys"]
        if len(body["keys"]) < page or not body.get("next"):
            return out
        after = str(body["next"])


def scan(store: KeyStore) -> tuple[list[Divergence], dict[int, ServerProblem]]:
    lists, problems = store._all(range(1, store.n + 1), lambda s: list_keys(store, s))
    per_key: dict[str, dict[int, dict[str, Any]]] = {}
    for slot, listed in lists.items():
        for row in listed:
            per_key.setdefault(str(row["key_id"]), {})[slot] = row
    out = []
    for key_id in sorted(per_key):
        rows = per_key[key_id]
        missing = tuple(s for s in sorted(lists) if s not in rows)
        sigs: dict[tuple[str, int, str], list[int]] = {}
        for slot, row in rows.items():
            sig = (str(row["hv_digest"]), int(row["acl_version"]), str(row["acl_digest"]))
            sigs.setdefault(sig, []).append(slot)
        major = max(sigs.values(), key=len)
        differing = tuple(sorted(s for s in rows if s not in major))
        if missing or differing:
            versions = {s: int(r["acl_version"]) for s, r in rows.items()}
            out.append(Divergence(key_id, missing, versions, differing))
    return out, problems


def status(store: KeyStore) -> list[ServerStatus]:
    def probe(slot: int) -> ServerStatus:
        t0 = time.perf_counter()
        try:
            body = store.servers.call(slot, "GET", "/v1/health")
            ok = body.get("slot") == slot
            detail = (
                f"slot {body.get('slot')}, protocol {body.get('protocol')}, "
                f"mdm {body.get('version')}"
            )
            if not ok:
                detail = f"WRONG SLOT: the server says it is {body.get('slot')}"
        except MDMError as exc:
            ok, detail = False, str(store.servers.problem(slot, exc))
        ms = (time.perf_counter() - t0) * 1000
        return ServerStatus(slot, store.servers.url(slot), ok, ms, detail)

    results, _ = store._all(range(1, store.n + 1), probe)
    return [results[s] for s in sorted(results)]
