"""The recall worker: staging requests -> PACS -> anonymize -> encrypt -> cache -> ONLINE.

One batch (:meth:`RecallWorker.run_once`) is the files of one series claimed from the catalog
staging queue under a lease (renewed by a heartbeat while the batch runs). The worker:

1. resolves the pseudonymous UIDs of the LFNs to the originals (identity vault, audited);
2. retrieves the instances from the PACS each file came from (replica ``pacs:NAME``), by
   C-GET or C-MOVE as configured, the UID list split over ``max_associations`` associations;
3. for every instance, in a thread pool fed while the retrieval goes on (so retrieval, the
   CPU work and the key-server round trips overlap): anonymize, encode, then either encrypt
   for the first time under a new key registered on the key servers (k+1 acknowledgements,
   the study's ``read`` ACL; the keys of the whole batch are registered by one
   ``register_many`` started before the retrieval, unused ones rolled back after it) or
   replay the recorded encryption (``mdm.workers.recipe``), check size and checksums
   against the catalog, and write to the cache (tmp + fsync + rename);
4. records, per file and in one transaction: size, adler32, sha256 and key id, the replica
   ONLINE with its pin, the de-identified header in the metadata catalog, the staging file
   COMPLETED. A refused or corrupt instance FAILS alone, with its reason.

A worker killed at any point leaves at most a temporary file (removed later) or a complete
file whose replica is not ONLINE; its claims expire and another worker finishes the request.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mdm._log import quiet_pynetdicom
from mdm.catalog import access, recalls, staging, vault
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.files import FileInfo
from mdm.catalog.models import AclGrant, Entry, ReplicaState, Right, utcnow
from mdm.catalog.recalls import Recalled
from mdm.dicom import scp
from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveRequest
from mdm.errors import ConfigError, MDMError
from mdm.settings import Settings
from mdm.workers import cache
from mdm.workers.instance import (
    InstanceProcessor,
    KeyBatch,
    Outcome,
    Timings,
    Work,
    anonymizer_from,
    service_caller,
)
from mdm.workers.recipe import RecipeStore

logger = logging.getLogger(__name__)

#: ``anonymizer_from`` and ``service_caller`` (from ``mdm.workers.instance``) are re-exported:
#: callers that run a worker also build the same anonymizer and catalog identity.
__all__ = [
    "BatchResult",
    "RecallWorker",
    "anonymizer_from",
    "pacs_replica",
    "run",
    "run_once",
    "service_caller",
]

PACS_REPLICA = "pacs:"
#: Seconds between evictions of expired cache copies by a running worker (at least; pins last
#: minutes to hours, and a sweep walks the whole cache).
SWEEP_PERIOD = 10.0


def pacs_replica(name: str) -> str:
    """The ``se`` of the replica row that says which PACS holds a file's original."""
    return PACS_REPLICA + name


@dataclass
class BatchResult:
    completed: int = 0
    failed: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return self.completed + self.failed


@dataclass
class Processed:
    """A batch processed but not yet recorded (``RecallWorker.process_next``): the outcomes,
    whether files were written (to flush), and the heartbeat keeping its claims."""

    outcomes: list[Outcome]
    written: bool
    stop: threading.Event
    beat: threading.Thread


class RecallWorker:
    """Processes the staging queue; see the module docstring. Close it (or use ``with``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        threads: int = 2,
        batch: int = 64,
    ) -> None:
        quiet_pynetdicom()
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        cat = settings.catalog
        self.dbs = CatalogDatabases(
            cat.database_url, cat.vault_database_url, busy_timeout=cat.busy_timeout_seconds
        )
        self.caller = service_caller(settings)
        self.timings = Timings()
        st = settings.storage
        self.se = st.name
        self.cache_root = Path(st.cache_dir)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        recipes = RecipeStore(st.recipe_dir or self.cache_root.parent / "recipes")
        self.processor = InstanceProcessor(
            settings, anonymizer_from(settings), recipes, self.cache_root, self.timings
        )
        self.pin = dt.timedelta(seconds=st.pin_lifetime_seconds)
        self.lease = cat.claim_lease_seconds
        self.batch = batch
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="mdm-recall")
        self._pacs: dict[str, Pacs] = {}
        self._receiver: scp.StorageReceiver | None = None
        self._scp: Any = None

    def __enter__(self) -> RecallWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._scp is not None:
            self._scp.shutdown()
        self.processor.close()
        self.dbs.dispose()

    # -- PACS ------------------------------------------------------------------------------

    def pacs(self, name: str) -> Pacs:
        if name not in self._pacs:
            section = self.settings.dicom.pacs.get(name)
            if section is None:
                raise ConfigError(f"files come from PACS {name!r}, which is not configured")
            if section.method.strip().lower() == "c-move" and self._receiver is None:
                self._receiver = scp.StorageReceiver()
                self._scp = scp.start(self.settings.dicom, self._receiver)
            self._pacs[name] = Pacs(name, section, self.settings.dicom, receiver=self._receiver)
        return self._pacs[name]

    # -- one batch -------------------------------------------------------------------------

    def run_once(self) -> BatchResult:
        """Claim, process and record one batch (one series); empty when nothing is queued."""
        batch = self.process_next()
        return self.record(batch) if batch is not None else BatchResult()

    def process_next(self) -> Processed | None:
        """Claim one batch and do everything but recording it (``record``); None when nothing
        is queued. ``run`` records a batch in the background while it processes the next one:
        the flush and the catalog transaction then no longer leave the cores idle."""
        with self.dbs.catalog.session(write=True) as s:
            claimed = staging.claim(
                s,
                self.caller,
                self.worker_id,
                limit=self.batch,
                lease=self.lease,
                max_attempts=self.settings.catalog.claim_max_attempts,
            )
            rows = [(f.id, f.path) for f in claimed]
        if not rows:
            return None
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=([i for i, _ in rows], stop), daemon=True
        )
        beat.start()
        try:
            outcomes, written = self._batch(rows)
        except BaseException:
            stop.set()
            beat.join()
            raise
        return Processed(outcomes, written, stop, beat)

    def record(self, batch: Processed) -> BatchResult:
        """Flush the batch's files (once) and record every outcome in one transaction; the
        claims are kept alive (heartbeat) until then."""
        result = BatchResult()
        try:
            t0 = time.perf_counter()
            if batch.written:
                os.sync()  # one flush for the batch: files and recipes are durable before ONLINE
            t0 = self.timings.add("sync", t0)
            self._finish(batch.outcomes, result)
            self.timings.add("record", t0)
        finally:
            batch.stop.set()
            batch.beat.join()
        return result

    def _heartbeat(self, file_ids: list[int], stop: threading.Event) -> None:
        while not stop.wait(max(self.lease / 3, 0.5)):
            try:
                with self.dbs.catalog.session(write=True) as s:
                    held = [i for i in file_ids if _still_held(s, i, self.worker_id)]
                    staging.extend(s, self.caller, self.worker_id, held, self.lease)
            except MDMError as exc:
                logger.warning("could not renew the staging lease: %s", exc.message)

    def _batch(self, rows: list[tuple[int, str]]) -> tuple[list[Outcome], bool]:
        """The outcome of every file of the batch, and whether any file was written."""
        works: dict[str, Work] = {}
        outcomes: list[Outcome] = []
        seen: dict[str, Work] = {}
        with self.dbs.catalog.session() as s:
            stmt = select(Entry).where(Entry.path.in_({lfn for _, lfn in rows}))
            entries = {e.path: e for e in s.scalars(stmt.options(selectinload(Entry.replicas)))}
            for file_id, lfn in rows:
                if lfn in seen:  # staged by several requests: one recall, all completed
                    seen[lfn].file_ids.append(file_id)
                    continue
                entry = entries.get(lfn)
                if entry is None:
                    lost = Work([file_id], lfn, "", "", None, None, None)
                    outcomes.append(Outcome(lost, "the file is no longer in the catalog"))
                    continue
                names = [
                    r.se[len(PACS_REPLICA) :]
                    for r in entry.replicas
                    if r.se.startswith(PACS_REPLICA)
                ]
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
                mine = [r for r in entry.replicas if r.se == self.se]
                if (
                    mine
                    and mine[0].state is ReplicaState.ONLINE
                    and entry.size is not None
                    and cache.present(self.cache_root, lfn, entry.size)
                ):
                    w = works.pop(lfn)  # still in the cache: only renew its pin
                    sums = {"adler32": w.adler32 or "", "sha256": w.sha256 or ""}
                    outcomes.append(Outcome(w, None, w.size or 0, sums))
            acl = _key_acl(s, next(iter(works))) if works else {}
        if not works:
            return outcomes, False
        parts = {lfn: access.split_path(lfn) for lfn in works}
        study, series = next(iter(parts.values()))[:2]
        try:
            with self.dbs.vault.session(write=True) as vs:
                originals = vault.original_uids(
                    vs,
                    self.caller,
                    lambda _p, _r: False,
                    [study, series, *(p[2] for p in parts.values())],
                    reason="recall",
                )
        except MDMError as exc:
            outcomes += [Outcome(w, f"identity vault: {exc.message}") for w in works.values()]
            return outcomes, False
        for lfn, w in works.items():
            w.original_sop = originals[parts[lfn][2]]
        by_pacs: dict[str, list[Work]] = {}
        for w in works.values():
            by_pacs.setdefault(w.pacs, []).append(w)
        written = False
        for name, group in by_pacs.items():
            done = self._recall(name, originals[study], originals[series], group, acl)
            written = written or any(o.reason is None for o in done)
            outcomes += done
        return outcomes, written

    def _recall(
        self,
        name: str,
        study: str,
        series: str,
        group: list[Work],
        acl: Mapping[str, list[str]],
    ) -> list[Outcome]:
        if not name:
            return [Outcome(w, "no PACS is recorded for this file") for w in group]
        by_sop = {w.original_sop: w for w in group}
        futures: dict[str, Future[Outcome]] = {}
        keys = self.processor.prepare_keys(group, acl)  # registered while the PACS sends
        try:
            return self._retrieve_and_process(name, study, series, by_sop, keys, acl, futures)
        finally:
            wait(futures.values())
            unused = keys.discard_unused()
            if unused:
                logger.info(
                    "%d key(s) registered for this batch were not used: rolled back", unused
                )

    def _retrieve_and_process(
        self,
        name: str,
        study: str,
        series: str,
        by_sop: Mapping[str, Work],
        keys: KeyBatch,
        acl: Mapping[str, list[str]],
        futures: dict[str, Future[Outcome]],
    ) -> list[Outcome]:
        problem = ""
        reports = []
        try:
            pacs = self.pacs(name)
            uids = sorted(by_sop)
            # pynetdicom receives in this process: several associations keep the PACS busy while
            # one waits for the GIL. getscu runs apart: one association per batch is enough,
            # and each one more costs a process and an association set-up.
            per = 8 if pacs.engine == "pynetdicom" else 64
            n = max(1, min(pacs.settings.max_associations, len(uids) // per or 1))
            requests = [
                RetrieveRequest(study, series, tuple(c), expected=frozenset(c))
                for c in (uids[i::n] for i in range(n))
                if c
            ]
            t0 = time.perf_counter()
            retrieval = pacs.iter_retrieve(requests, buffer=16)
            for instance in retrieval:
                w = by_sop.get(instance.sop_instance_uid)
                if w is not None and instance.sop_instance_uid not in futures:
                    futures[instance.sop_instance_uid] = self.pool.submit(
                        self.processor.process, w, instance.data, acl, keys
                    )
            reports = retrieval.reports
            self.timings.add("retrieve", t0)
        except MDMError as exc:
            problem = f"PACS {name!r}: {exc.message}"
        failed: dict[str, str] = {}
        for report in reports:
            failed.update({uid: f"PACS {name!r}: {why}" for uid, why in report.failed.items()})
            for uid in report.missing:
                failed.setdefault(uid, f"PACS {name!r} did not deliver it: {report.summary()}")
        t0 = time.perf_counter()
        outcomes = [futures[uid].result() for uid in futures]
        self.timings.add("drain", t0)
        for uid, w in by_sop.items():
            if uid not in futures:
                why = failed.get(uid) or problem or f"PACS {name!r} did not deliver it"
                outcomes.append(Outcome(w, why))
        return outcomes

    # -- one instance (thread pool) -------------------------------------------------------

    # -- recording ---------------------------------------------------------------------------

    def _finish(self, outcomes: Iterable[Outcome], result: BatchResult) -> None:
        items = []
        for o in outcomes:
            reason = o.reason
            if reason is None and not cache.present(self.cache_root, o.work.lfn, o.size):
                reason = "the cache copy vanished; stage again"
            info = FileInfo()
            if reason is None:
                info = FileInfo(o.size, o.sums["adler32"], o.sums["sha256"], o.key_id or None)
            items.append(Recalled(o.work.lfn, o.work.file_ids, reason, info, o.header))
        with self.dbs.catalog.session(write=True) as s:
            done = recalls.record(
                s,
                self.caller,
                self.worker_id,
                items,
                se=self.se,
                url=self._url,
                pinned_until=utcnow() + self.pin,
            )
        result.completed += len(done.online)
        result.failed += len(done.failed)
        for lfn, reason in done.failed.items():
            logger.info("recall of %s failed: %s", lfn, reason)
        for lfn in done.lost:  # the claim expired: another worker has it now
            logger.warning("%s: the claim on it was lost before the recall was recorded", lfn)

    def _url(self, lfn: str) -> str:
        base = self.settings.storage.url.rstrip("/")
        return f"{base}{lfn}" if base else lfn

    # -- eviction --------------------------------------------------------------------------

    def sweep(self) -> list[str]:
        st = self.settings.storage
        cache.clean_debris(self.cache_root, older_than=max(self.lease, 60.0))
        return cache.sweep(
            self.dbs.catalog,
            self.se,
            self.cache_root,
            grace=st.release_grace_seconds,
            limit_bytes=st.cache_limit_bytes,
        )


def _still_held(s: Any, file_id: int, worker: str) -> bool:
    from mdm.catalog.models import StageFile, StageState

    f = s.get(StageFile, file_id)
    return f is not None and f.state is StageState.STARTED and f.claimed_by == worker


def _key_acl(s: Any, lfn: str) -> dict[str, list[str]]:
    """The key's ACL: whoever holds ``decrypt`` (level 2) on the study or series (or /dicom).

    Not ``read``: that is level 1 (ciphertext only), which must not open the key servers.
    """
    anchors = access.anchors(lfn)
    stmt = select(AclGrant.principal).where(
        AclGrant.right == Right.DECRYPT, AclGrant.path.in_(anchors)
    )
    return {p: ["read"] for p in sorted(set(s.scalars(stmt)))}


def run_once(settings: Settings, *, worker: RecallWorker | None = None) -> BatchResult:
    """Drain the queue once (every claimable batch), then evict what expired."""
    own = worker is None
    w = worker or RecallWorker(settings)
    total = BatchResult()
    try:
        while (r := w.run_once()).files:
            total.completed += r.completed
            total.failed += r.failed
        w.sweep()
    finally:
        if own:
            w.close()
    return total


def run(
    settings: Settings,
    once: bool = False,
    stop_event: threading.Event | None = None,
    *,
    idle: float = 1.0,
    on_batch: Callable[[BatchResult], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
    threads: int = 2,
) -> BatchResult:
    """Process the queue until *stop_event* is set (or, with *once*, until it is empty)."""
    stop = stop_event or threading.Event()
    total = BatchResult()

    def settle(recording: Future[BatchResult]) -> None:
        r = recording.result()
        total.completed += r.completed
        total.failed += r.failed
        if r.files and on_batch is not None:
            on_batch(r)

    with (
        RecallWorker(settings, threads=threads) as w,
        ThreadPoolExecutor(1, thread_name_prefix="mdm-recall-record") as recorder,
    ):
        if on_ready is not None:
            on_ready(w.worker_id)
        last_sweep = 0.0
        recording: Future[BatchResult] | None = None
        while not stop.is_set():
            batch = w.process_next()
            if recording is not None:  # at most one batch waits to be recorded
                settle(recording)
                recording = None
            if batch is not None:
                recording = recorder.submit(w.record, batch)
            elif once:
                w.sweep()
                break
            if time.monotonic() - last_sweep > max(idle * 5, SWEEP_PERIOD):
                w.sweep()
                last_sweep = time.monotonic()
            if batch is None:
                stop.wait(idle)
        if recording is not None:
            settle(recording)
        total.timings = dict(w.timings.totals)
    return total
