"""The recall worker: staging requests -> PACS -> anonymize -> encrypt -> cache -> ONLINE.

One batch (:meth:`RecallWorker.run_once`) is the files of one series (topped up with more whole
series when it is small) claimed from the catalog staging queue under a lease (renewed by a
heartbeat while the batch runs). This module holds the queue side (claim, heartbeat,
recording, eviction, the service loop ``run``); the work on a claimed batch, steps 1 to 3, is
``mdm.workers.batch.BatchProcessor``. The worker:

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
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm._log import quiet_pynetdicom
from mdm.catalog import migrations, recalls, staging
from mdm.catalog.files import FileInfo
from mdm.catalog.models import utcnow
from mdm.catalog.recalls import Recalled
from mdm.dicom.pacs import Pacs
from mdm.errors import MDMError
from mdm.settings import Settings
from mdm.workers import cache
from mdm.workers.batch import PACS_REPLICA, BatchProcessor, pacs_replica
from mdm.workers.instance import Outcome, Timings, anonymizer_from, service_caller

logger = logging.getLogger(__name__)

#: ``anonymizer_from`` and ``service_caller`` (from ``mdm.workers.instance``) are re-exported:
#: callers that run a worker also build the same anonymizer and catalog identity.
#: ``PACS_REPLICA`` and ``pacs_replica`` live in ``mdm.workers.batch`` (which reads them) and
#: are re-exported for ``mdm register``, which writes them.
__all__ = [
    "PACS_REPLICA",
    "SWEEP_PERIOD",
    "BatchResult",
    "RecallWorker",
    "anonymizer_from",
    "pacs_replica",
    "run",
    "run_once",
    "service_caller",
]

#: Seconds between evictions of expired cache copies by a running worker (at least; pins last
#: minutes to hours, and a sweep walks the whole cache).
SWEEP_PERIOD = 10.0
#: Batches a running worker lets wait for their flush and recording while it processes the
#: next ones. The flush (``os.sync``) takes as long as the disk needs to take the batch's
#: ~15 MB; waiting for it before the next batch idled the cores (bench/recall.py: docs/recall.md).
RECORDING_BEHIND = 2


@dataclass
class BatchResult:
    """How many files of one batch (or of a whole ``run``) completed and failed, and the
    seconds per stage (``Timings``) of a ``run``."""

    completed: int = 0
    failed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    #: Instances anonymized element by element, and through the whole dataset
    #: (``mdm.workers.elementwise``) in a ``run``.
    elementwise: tuple[int, int] = (0, 0)

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
        self.dbs = migrations.open_current(cat)  # a clear error, not a missing column later
        self.caller = service_caller(settings)
        self.timings = Timings()
        st = settings.storage
        self.se = st.name
        self.cache_root = Path(st.cache_dir)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.batches = BatchProcessor(
            settings, self.dbs, self.caller, self.timings, self.cache_root, threads=threads
        )
        self.pin = dt.timedelta(seconds=st.pin_lifetime_seconds)
        self.lease = cat.claim_lease_seconds
        self.batch = batch

    def __enter__(self) -> RecallWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.batches.close()
        self.dbs.dispose()

    def pacs(self, name: str) -> Pacs:
        """The PACS *name* as this worker retrieves from it (``BatchProcessor.pacs``)."""
        return self.batches.pacs(name)

    # -- one batch -------------------------------------------------------------------------

    def elementwise(self) -> tuple[int, int]:
        """Instances anonymized element by element, and through the whole dataset, so far."""
        ew = self.batches.processor.elementwise
        return ew.taken, ew.declined

    def run_once(self) -> BatchResult:
        """Claim, process and record one batch (one or more series); empty when nothing is
        queued."""
        batch = self.process_next()
        return self.record(batch) if batch is not None else BatchResult()

    def process_next(self) -> Processed | None:
        """Claim one batch and do everything but recording it (``record``); None when nothing
        is queued. ``run`` records a batch in the background while it processes the next one:
        the flush and the catalog transaction then no longer leave the cores idle.

        A batch is one series, topped up with further *whole* series while it holds fewer
        than half of ``batch`` files: each batch costs a claim, a key-server call, a flush and
        a recording transaction whatever its size, and small series (radiographs, short MR
        runs) would pay them per handful of files. Series are never split for this, and a
        batch stops growing at half its size so that other workers still find work.
        """
        rows: list[tuple[int, str]] = []
        with self.dbs.catalog.session(write=True) as s:
            while len(rows) < max(1, self.batch // 2):
                claimed = staging.claim_rows(
                    s,
                    self.caller,
                    self.worker_id,
                    limit=self.batch - len(rows),
                    lease=self.lease,
                    max_attempts=self.settings.catalog.claim_max_attempts,
                    whole_series=bool(rows),
                )
                if not claimed:
                    break
                rows += claimed
        if not rows:
            return None
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=([i for i, _ in rows], stop), daemon=True
        )
        beat.start()
        try:
            outcomes, written = self.batches.process(rows)
        except BaseException:
            stop.set()
            beat.join()
            raise
        return Processed(outcomes, written, stop, beat)

    def _heartbeat(self, file_ids: list[int], stop: threading.Event) -> None:
        """Renew the lease on the claims this worker still holds until *stop* is set: a batch
        may outlast one lease, and an expired claim would be recalled twice."""
        while not stop.wait(max(self.lease / 3, 0.5)):
            try:
                with self.dbs.catalog.session(write=True) as s:
                    held = [i for i in file_ids if _still_held(s, i, self.worker_id)]
                    staging.extend(s, self.caller, self.worker_id, held, self.lease)
            except MDMError as exc:
                logger.warning("could not renew the staging lease: %s", exc.message)

    # -- recording ---------------------------------------------------------------------------

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

    def _finish(self, outcomes: Iterable[Outcome], result: BatchResult) -> None:
        """Record *outcomes* in one catalog transaction and count them in *result*; a cache
        copy gone since it was written (evicted, deleted) fails rather than going ONLINE."""
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
        """The URL of the ONLINE replica: the SE's base URL (if set) and the LFN."""
        base = self.settings.storage.url.rstrip("/")
        return f"{base}{lfn}" if base else lfn

    # -- eviction --------------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Remove old temporary files (of the cache and of the recipes: a worker killed while
        writing either leaves ``*.mdm-tmp`` debris) and evict expired cache copies; the LFNs
        evicted."""
        st = self.settings.storage
        older_than = max(self.lease, 60.0)
        cache.clean_debris(self.cache_root, older_than=older_than)
        cache.clean_debris(self.batches.processor.recipes.root, older_than=older_than)
        return cache.sweep(
            self.dbs.catalog,
            self.se,
            self.cache_root,
            grace=st.release_grace_seconds,
            limit_bytes=st.cache_limit_bytes,
        )


def _still_held(s: Any, file_id: int, worker: str) -> bool:
    """Whether *worker* still holds the claim on staging file *file_id* (not renewed if not:
    another worker may have taken it over)."""
    from mdm.catalog.models import StageFile, StageState

    f = s.get(StageFile, file_id)
    return f is not None and f.state is StageState.STARTED and f.claimed_by == worker


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
        total.elementwise = w.elementwise()
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
    batch: int = 64,
) -> BatchResult:
    """Process the queue until *stop_event* is set (or, with *once*, until it is empty), in
    batches of up to *batch* files (``RecallWorker``), *threads* instances at a time."""
    stop = stop_event or threading.Event()
    total = BatchResult()

    def settle(recording: Future[BatchResult]) -> None:
        r = recording.result()
        total.completed += r.completed
        total.failed += r.failed
        if r.files and on_batch is not None:
            on_batch(r)

    with (
        RecallWorker(settings, threads=threads, batch=batch) as w,
        ThreadPoolExecutor(1, thread_name_prefix="mdm-recall-record") as recorder,
    ):
        if on_ready is not None:
            on_ready(w.worker_id)
        last_sweep = 0.0
        recording: deque[Future[BatchResult]] = deque()
        while not stop.is_set():
            processed = w.process_next()
            while recording and (processed is None or len(recording) >= RECORDING_BEHIND):
                settle(recording.popleft())
            if processed is not None:
                recording.append(recorder.submit(w.record, processed))
            elif once:
                w.sweep()
                break
            if time.monotonic() - last_sweep > max(idle * 5, SWEEP_PERIOD):
                w.sweep()
                last_sweep = time.monotonic()
            if processed is None:
                stop.wait(idle)
        while recording:
            settle(recording.popleft())
        total.timings = dict(w.timings.totals)
        total.elementwise = w.elementwise()
    return total
