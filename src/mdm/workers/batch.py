"""One claimed batch of the recall worker, from its LFNs to one outcome per file.

The recall worker (``mdm.workers.recall``) owns the staging queue side of a batch: the claim,
the lease heartbeat, recording the outcomes and the service loop. This module is the work in
between. It records nothing in the staging queue or the replicas, so a worker killed here
leaves at most cache files no ONLINE replica points to; its claims expire and another worker
starts over:

1. resolve: the catalog entries of the LFNs (size and checksums if recalled before, the PACS
   that holds each original), the key ACL (``decrypt`` grants on the study, series or
   /dicom), and the original UIDs of the pseudonymous ones (identity vault, audited with the
   reason ``recall``); a file still ONLINE in the cache only has its pin renewed;
2. retrieve from each PACS (``Pacs.iter_retrieve``), the UID list split over up to
   ``max_associations`` associations, while the batch's keys are registered on the key
   servers (``InstanceProcessor.prepare_keys``);
3. process every instance as it arrives, in a thread pool (``InstanceProcessor.process``):
   retrieval, CPU work and key-server round trips overlap; unused keys are rolled back.

Every file ends as an ``Outcome``: written to the cache, or failed with a reason a grid user
may read (never an original UID or a name).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from mdm.catalog import access, vault
from mdm.catalog.models import AclGrant, Entry, Replica, ReplicaState, Right
from mdm.dicom import scp
from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveRequest
from mdm.errors import ConfigError, MDMError
from mdm.workers import cache
from mdm.workers.instance import (
    InstanceProcessor,
    KeyBatch,
    Outcome,
    Timings,
    Work,
    anonymizer_from,
)
from mdm.workers.recipe import RecipeStore

if TYPE_CHECKING:
    from mdm.catalog.access import Caller
    from mdm.catalog.db import CatalogDatabases
    from mdm.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["PACS_REPLICA", "BatchProcessor", "pacs_replica"]

#: Prefix of the ``se`` of the replica row naming the PACS that holds a file's original:
#: the catalog records where to recall from as one more replica, not as a column of its own.
PACS_REPLICA = "pacs:"


def pacs_replica(name: str) -> str:
    """The ``se`` of the replica row that says which PACS holds a file's original."""
    return PACS_REPLICA + name


class BatchProcessor:
    """Turns the claimed rows of one batch into outcomes; see the module docstring.

    Holds what outlives a batch: the instance thread pool, the ``InstanceProcessor`` (key
    servers, recipes) and one ``Pacs`` per PACS name, with the storage SCP that C-MOVE needs
    started on first use. Close it to stop them.
    """

    def __init__(
        self,
        settings: Settings,
        dbs: CatalogDatabases,
        caller: Caller,
        timings: Timings,
        cache_root: Path,
        *,
        threads: int = 2,
    ) -> None:
        self.settings = settings
        self.dbs = dbs
        self.caller = caller
        self.timings = timings
        self.se = settings.storage.name
        self.cache_root = cache_root
        recipes = RecipeStore(settings.storage.recipe_dir or cache_root.parent / "recipes")
        self.processor = InstanceProcessor(
            settings, anonymizer_from(settings), recipes, cache_root, timings
        )
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="mdm-recall")
        self._pacs: dict[str, Pacs] = {}
        self._receiver: scp.StorageReceiver | None = None
        self._scp: Any = None

    def close(self) -> None:
        """Finish the instances in progress (queued ones are cancelled), then stop the SCP
        and the key-server clients: in that order, as the instances still use both."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._scp is not None:
            self._scp.shutdown()
        self.processor.close()

    def pacs(self, name: str) -> Pacs:
        """The PACS *name*, built once; a C-MOVE PACS starts the worker's storage SCP."""
        if name not in self._pacs:
            section = self.settings.dicom.pacs.get(name)
            if section is None:
                raise ConfigError(f"files come from PACS {name!r}, which is not configured")
            if section.method.strip().lower() == "c-move" and self._receiver is None:
                self._receiver = scp.StorageReceiver()
                self._scp = scp.start(self.settings.dicom, self._receiver)
            self._pacs[name] = Pacs(name, section, self.settings.dicom, receiver=self._receiver)
        return self._pacs[name]

    def process(self, rows: list[tuple[int, str]]) -> tuple[list[Outcome], bool]:
        """The outcome of every file of the batch (``(file id, LFN)`` rows of one series, maybe
        topped up with whole ones), and whether any file was written (the caller flushes before
        recording). Each series has its own vault lookup (one failing fails that series
        alone), ACL and retrieval; the batch's new keys are registered in one call."""
        works: dict[str, Work] = {}
        outcomes: list[Outcome] = []
        seen: dict[str, Work] = {}
        with self.dbs.catalog.session() as s:
            entries, replicas = _entries(s, {lfn for _, lfn in rows})
            for file_id, lfn in rows:
                if lfn in seen:  # staged by several requests: one recall, all completed
                    seen[lfn].file_ids.append(file_id)
                    continue
                entry = entries.get(lfn)
                if entry is None:
                    lost = Work([file_id], lfn, "", "", None, None, None)
                    outcomes.append(Outcome(lost, "the file is no longer in the catalog"))
                    continue
                held = replicas.get(entry.id, [])
                names = [se[len(PACS_REPLICA) :] for se, _ in held if se.startswith(PACS_REPLICA)]
                if not names and len(self.settings.dicom.pacs) == 1:
                    names = list(self.settings.dicom.pacs)
                works[lfn] = seen[lfn] = Work(
                    [file_id],
                    lfn,
                    entry.guid,
                    names[0] if names else "",
                    entry.size,
                    entry.adler32,
                    entry.sha256,
                )
                mine = [state for se, state in held if se == self.se]
                if (
                    mine
                    and mine[0] is ReplicaState.ONLINE
                    and entry.size is not None
                    and cache.present(self.cache_root, lfn, entry.size)
                ):
                    w = works.pop(lfn)  # still in the cache: only renew its pin
                    sums = {"adler32": w.adler32 or "", "sha256": w.sha256 or ""}
                    outcomes.append(Outcome(w, None, w.size or 0, sums))
            parts = {lfn: access.split_path(lfn) for lfn in works}
            by_series: dict[tuple[str, str], list[Work]] = {}
            for lfn, w in works.items():
                study, series = parts[lfn][:2]
                by_series.setdefault((study, series), []).append(w)
            acls = {key: _key_acl(s, group[0].lfn) for key, group in by_series.items()}
        groups: list[_Group] = []
        for (study, series), series_works in by_series.items():
            try:
                with self.dbs.vault.session(write=True) as vs:
                    originals = vault.original_uids(
                        vs,
                        self.caller,
                        lambda _p, _r: False,
                        [study, series, *(parts[w.lfn][2] for w in series_works)],
                        reason="recall",
                    )
            except MDMError as exc:
                outcomes += [Outcome(w, f"identity vault: {exc.message}") for w in series_works]
                continue
            by_pacs: dict[str, list[Work]] = {}
            for w in series_works:
                w.original_sop = originals[parts[w.lfn][2]]
                by_pacs.setdefault(w.pacs, []).append(w)
            for name, group in by_pacs.items():
                if not name:
                    outcomes += [Outcome(w, "no PACS is recorded for this file") for w in group]
                    continue
                acl = acls[(study, series)]
                groups.append(_Group(name, originals[study], originals[series], group, acl))
        if not groups:
            return outcomes, False
        done = self._recall(groups)
        return outcomes + done, any(o.reason is None for o in done)

    def _recall(self, groups: list[_Group]) -> list[Outcome]:
        """The files of every group, one retrieval after the other while the pool works on
        what arrived; the keys of the whole batch are registered in one call, during the
        first retrieval. Every instance submitted to the pool has finished before the unused
        keys are rolled back (it may still take one)."""
        keys = self.processor.prepare_keys([(w, g.acl) for g in groups for w in g.works])
        try:
            for g in groups:
                self._retrieve(g, keys)
            t0 = time.perf_counter()
            outcomes = [o for g in groups for o in self._outcomes(g)]
            self.timings.add("drain", t0)
            return self.processor.settle(outcomes, keys)
        finally:
            wait([f for g in groups for f in g.futures.values()])
            unused = keys.discard_unused()
            if unused:
                logger.info(
                    "%d key(s) registered for this batch were not used: rolled back", unused
                )

    def _retrieve(self, g: _Group, keys: KeyBatch) -> None:
        """Feed the pool while the PACS sends the files of *g*; notes what the PACS said of
        the files it did not deliver (``_outcomes`` turns them into reasons)."""
        name = g.pacs
        try:
            pacs = self.pacs(name)
            uids = sorted(g.by_sop)
            # pynetdicom receives in this process: several associations keep the PACS busy while
            # one waits for the GIL. getscu runs apart: one association per batch is enough,
            # and each one more costs a process and an association set-up.
            per = 8 if pacs.engine == "pynetdicom" else 64
            n = max(1, min(pacs.settings.max_associations, len(uids) // per or 1))
            requests = [
                RetrieveRequest(g.study, g.series, tuple(c), expected=frozenset(c))
                for c in (uids[i::n] for i in range(n))
                if c
            ]
            t0 = time.perf_counter()
            retrieval = pacs.iter_retrieve(requests, buffer=16)
            for instance in retrieval:
                w = g.by_sop.get(instance.sop_instance_uid)
                if w is not None and instance.sop_instance_uid not in g.futures:
                    g.futures[instance.sop_instance_uid] = self.pool.submit(
                        self.processor.process, w, instance.data, g.acl, keys
                    )
            reports = retrieval.reports
            self.timings.add("retrieve", t0)
        except MDMError as exc:
            g.problem = f"PACS {name!r}: {exc.message}"
            return
        for report in reports:
            g.failed.update({uid: f"PACS {name!r}: {why}" for uid, why in report.failed.items()})
            for uid in report.missing:
                g.failed.setdefault(uid, f"PACS {name!r} did not deliver it: {report.summary()}")

    def _outcomes(self, g: _Group) -> list[Outcome]:
        """Every file of *g*: processed, or failed with the PACS's own reason when it gave
        one."""
        outcomes = [g.futures[uid].result() for uid in g.futures]
        for uid, w in g.by_sop.items():
            if uid not in g.futures:
                why = g.failed.get(uid) or g.problem or f"PACS {g.pacs!r} did not deliver it"
                outcomes.append(Outcome(w, why))
        return outcomes


@dataclass
class _Group:
    """The files of one series from one PACS, within a batch, and their retrieval's state."""

    pacs: str
    study: str  # original UIDs (what the PACS knows)
    series: str
    works: list[Work]
    acl: Mapping[str, list[str]]
    by_sop: dict[str, Work] = field(init=False)  # original SOP Instance UID -> file
    futures: dict[str, Future[Outcome]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    problem: str = ""

    def __post_init__(self) -> None:
        self.by_sop = {w.original_sop: w for w in self.works}


def _entries(s: Any, paths: set[str]) -> tuple[dict[str, Any], dict[int, list[Any]]]:
    """The catalog entries of *paths* (by path: id, GUID, size, checksums) and their
    replicas (by entry id: ``(se, state)``), as plain rows: two SELECTs, no ORM objects,
    which cost the worker more than the queries (py-spy, docs/recall.md)."""
    entries = {
        row.path: row
        for row in s.execute(
            select(Entry.id, Entry.path, Entry.guid, Entry.size, Entry.adler32, Entry.sha256).where(
                Entry.path.in_(paths)
            )
        )
    }
    replicas: dict[int, list[Any]] = {}
    if entries:
        ids = [row.id for row in entries.values()]
        stmt = select(Replica.entry_id, Replica.se, Replica.state).where(Replica.entry_id.in_(ids))
        for entry_id, se, state in s.execute(stmt.order_by(Replica.id)):
            replicas.setdefault(entry_id, []).append((se, state))
    return entries, replicas


def _key_acl(s: Any, lfn: str) -> dict[str, list[str]]:
    """The key's ACL: whoever holds ``decrypt`` (level 2) on the study or series (or /dicom).

    Not ``read``: that is level 1 (ciphertext only), which must not open the key servers.
    """
    anchors = access.anchors(lfn)
    stmt = select(AclGrant.principal).where(
        AclGrant.right == Right.DECRYPT, AclGrant.path.in_(anchors)
    )
    return {p: ["read"] for p in sorted(set(s.scalars(stmt)))}
