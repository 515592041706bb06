"""``Pacs``: one configured PACS, seen through C-ECHO, C-FIND and C-GET or C-MOVE.

Built from the ``[dicom.pacs.NAME]`` settings section. Retrieval uses the method the site
chose for that PACS (``c-get`` needs no network path back to MDM; ``c-move`` needs the PACS
to know MDM's storage SCP as a destination, see docs/pacs.md) and up to ``max_associations``
associations in parallel, each working through the requests one after the other and keeping
its association open between them. An association that ended abnormally is aborted and a
fresh one opened for the next request (re-using it would block for the DIMSE timeout).

``iter_retrieve`` gives the same retrieval as a stream of instances; its iterator,
``Retrieval``, lives in ``mdm.dicom.retrieval_stream`` and is re-exported here.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association

from mdm.dicom import getscu
from mdm.dicom import retrieve as _retrieve
from mdm.dicom.query import (
    InstanceRecord,
    PatientRecord,
    QuerySession,
    SeriesRecord,
    StudyRecord,
)
from mdm.dicom.retrieval_stream import Retrieval
from mdm.dicom.retrieve import GetSession, RetrieveReport, RetrieveRequest
from mdm.dicom.scp import Sink, StorageReceiver
from mdm.dicom.scu import (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    VERIFICATION,
    Peer,
    associate,
    close_association,
    describe,
    new_ae,
    open_association,
    status_of,
)
from mdm.errors import ConfigError, DimseFailure, MDMError
from mdm.settings import DicomSettings, PacsSettings, Settings

#: ``Retrieval`` is re-exported: it is the type ``Pacs.iter_retrieve`` returns.
__all__ = ["ENGINES", "METHODS", "Pacs", "Retrieval"]

METHODS = ("c-get", "c-move")
ENGINES = ("pynetdicom", "dcmtk")


class Pacs:
    """A PACS as MDM uses it. Thread-safe: every call opens its own association(s)."""

    def __init__(
        self,
        name: str,
        settings: PacsSettings,
        dicom: DicomSettings | None = None,
        *,
        receiver: StorageReceiver | None = None,
    ) -> None:
        dicom = dicom or DicomSettings()
        method = settings.method.strip().lower()
        if method not in METHODS:
            raise ConfigError(
                f"dicom.pacs.{name}.method must be one of {', '.join(METHODS)}, "
                f"not {settings.method!r}",
                key=f"dicom.pacs.{name}.method",
            )
        engine = settings.engine.strip().lower()
        if engine not in ENGINES or (engine == "dcmtk" and method != "c-get"):
            raise ConfigError(
                f"dicom.pacs.{name}.engine must be one of {', '.join(ENGINES)} "
                f"(dcmtk retrieves by C-GET only), not {settings.engine!r} with {method}",
                key=f"dicom.pacs.{name}.engine",
            )
        if settings.max_associations < 1:
            raise ConfigError(
                f"dicom.pacs.{name}.max_associations must be at least 1",
                key=f"dicom.pacs.{name}.max_associations",
            )
        self.name = name
        self.settings = settings
        self.method = method
        self.engine = engine
        self.getscu, self.spool_dir = dicom.getscu, dicom.spool_dir
        self.calling_aet = dicom.ae_title
        self.destination = settings.move_destination or dicom.ae_title
        self.receiver = receiver
        self.peer = Peer.of(name, settings)

    @classmethod
    def from_settings(
        cls, settings: Settings, name: str, *, receiver: StorageReceiver | None = None
    ) -> Pacs:
        try:
            section = settings.dicom.pacs[name]
        except KeyError:
            known = ", ".join(sorted(settings.dicom.pacs)) or "none"
            raise ConfigError(
                f"no PACS named {name!r} in [dicom.pacs] (configured: {known})",
                key=f"dicom.pacs.{name}",
            ) from None
        return cls(name, section, settings.dicom, receiver=receiver)

    def __repr__(self) -> str:
        return f"Pacs({self.peer}, method={self.method})"

    # -- verification and queries -------------------------------------------------------------

    def echo(self) -> float:
        """C-ECHO; returns the round trip in seconds, raises if the PACS does not answer 0x0000."""
        ae = new_ae(self.calling_aet, self.settings)
        ae.add_requested_context(VERIFICATION)
        start = time.perf_counter()
        with associate(ae, self.peer) as assoc:
            status = assoc.send_c_echo()
            code = status_of(status)
            if code != 0:
                raise DimseFailure(
                    f"C-ECHO to {self.peer} failed: {describe(code, status)}",
                    pacs=self.name,
                    operation="C-ECHO",
                    status=-1 if code is None else code,
                )
        return time.perf_counter() - start

    @contextlib.contextmanager
    def query(self) -> Iterator[QuerySession]:
        """One association for many C-FINDs (Study Root, and Patient Root for PATIENT level)."""
        ae = new_ae(self.calling_aet, self.settings)
        ae.add_requested_context(STUDY_ROOT_FIND)
        ae.add_requested_context(PATIENT_ROOT_FIND)
        with associate(ae, self.peer) as assoc:
            yield QuerySession(assoc, self.peer)

    def find_patients(self, matching: Mapping[str, Any] | None = None) -> list[PatientRecord]:
        with self.query() as q:
            return q.patients(matching)

    def find_studies(self, matching: Mapping[str, Any] | None = None) -> list[StudyRecord]:
        with self.query() as q:
            return q.studies(matching)

    def find_series(
        self, study_uid: str, matching: Mapping[str, Any] | None = None
    ) -> list[SeriesRecord]:
        with self.query() as q:
            return q.series(study_uid, matching)

    def find_instances(
        self, study_uid: str, series_uid: str, matching: Mapping[str, Any] | None = None
    ) -> list[InstanceRecord]:
        with self.query() as q:
            return q.instances(study_uid, series_uid, matching)

    # -- retrieval ------------------------------------------------------------------------------

    def plan(self, requests: Sequence[RetrieveRequest]) -> list[RetrieveRequest]:
        """Fill in ``expected`` (and SOP classes) of study/series requests by IMAGE-level C-FIND."""
        todo = [r for r in requests if r.expected is None and not r.sop_instance_uids]
        if not todo:
            return list(requests)
        planned: dict[int, RetrieveRequest] = {}
        # Only the keys reconciliation needs (and the SOP class, which C-GET must propose):
        # Orthanc reads each file from disk to answer keys it does not index.
        keys = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
        if self.method == "c-get":
            keys.append("SOPClassUID")
        with self.query() as q:
            for index, req in enumerate(requests):
                if req.expected is not None or req.sop_instance_uids:
                    continue
                series = (
                    [req.series_uid]
                    if req.series_uid
                    else [s.series_uid for s in q.series(req.study_uid)]
                )
                found = [
                    i for uid in series for i in q.instances(req.study_uid, str(uid), keys=keys)
                ]
                planned[index] = RetrieveRequest(
                    req.study_uid,
                    req.series_uid,
                    expected=frozenset(i.sop_instance_uid for i in found),
                    sop_classes=req.sop_classes
                    | frozenset(i.sop_class_uid for i in found if i.sop_class_uid),
                    series_of={i.sop_instance_uid: i.series_uid for i in found},
                )
        return [planned.get(i, r) for i, r in enumerate(requests)]

    def retrieve(
        self,
        requests: Sequence[RetrieveRequest],
        sink: Sink,
        *,
        max_associations: int | None = None,
        isolate: int = 1000,
        cancel: threading.Event | None = None,
    ) -> list[RetrieveReport]:
        """Retrieve every request, delivering instances to *sink*; one report per request.

        Reports come back in the order of *requests*; check ``report.ok`` or call
        ``raise_for_failure()``. Per-request failures (failed or missing instances, a final
        status other than success, an association aborted mid-way) are in the reports. An
        association that cannot be opened at all (``AssociationRejected``,
        ``TransportError``) is fatal: it is raised once every worker has stopped, with the
        reports finished so far as its ``reports`` attribute.

        When a request fails with instances missing, up to *isolate* of them are retried one
        by one on the same association (0 disables it): the instances a PACS can deliver
        arrive, and ``failed`` names exactly those it cannot, each with the PACS's answer.

        Setting *cancel* stops the retrieval after the requests in progress; requests never
        started get no report (the list is then shorter than *requests*).
        """
        if self.method == "c-move" and self.receiver is None:
            raise ConfigError(
                f"PACS {self.name!r} retrieves by C-MOVE but no storage SCP receiver was given",
                key=f"dicom.pacs.{self.name}.method",
            )
        planned = self.plan(requests)
        if not planned:
            return []
        sop_classes = frozenset().union(*(r.sop_classes for r in planned))
        contexts = _retrieve.storage_contexts(sop_classes)
        work: queue.SimpleQueue[tuple[int, RetrieveRequest]] = queue.SimpleQueue()
        for item in enumerate(planned):
            work.put(item)
        reports: dict[int, RetrieveReport] = {}
        stop = threading.Event()
        errors: list[BaseException] = []
        workers = min(max_associations or self.settings.max_associations, len(planned))

        def run() -> None:
            try:
                if self.engine == "dcmtk":
                    self._work_dcmtk(work, reports, sink, (stop, cancel), isolate)
                else:
                    self._work(work, reports, sink, contexts, (stop, cancel), isolate)
            except BaseException as exc:
                stop.set()  # the other workers finish their request in progress, then stop
                errors.append(exc)

        with ThreadPoolExecutor(workers, thread_name_prefix=f"mdm-pacs-{self.name}") as pool:
            for _ in range(workers):
                pool.submit(run)
        done = [reports[i] for i in sorted(reports)]
        if errors:
            exc = errors[0]
            if isinstance(exc, MDMError):
                exc.reports = done  # type: ignore[attr-defined]
            raise exc
        return done

    def _work(
        self,
        work: queue.SimpleQueue[tuple[int, RetrieveRequest]],
        reports: dict[int, RetrieveReport],
        sink: Sink,
        contexts: list[tuple[str, str]],
        stops: tuple[threading.Event, threading.Event | None],
        isolate: int,
    ) -> None:
        ae = new_ae(self.calling_aet, self.settings)
        ae.add_requested_context(STUDY_ROOT_FIND)
        session = GetSession()
        roles: list[Any] = []
        handlers: list[Any] = []
        if self.method == "c-get":
            ae.add_requested_context(STUDY_ROOT_GET)
            for sop_class_uid, syntax in contexts:
                ae.add_requested_context(sop_class_uid, syntax)
            roles = _retrieve.scp_roles(contexts)
            handlers = [(evt.EVT_C_STORE, session.handle_store)]
        else:
            ae.add_requested_context(STUDY_ROOT_MOVE)
        assoc: Association | None = None

        def run(assoc: Association, request: RetrieveRequest) -> RetrieveReport:
            if self.method == "c-get":
                return _retrieve.get(assoc, session, self.peer, request, sink)
            receiver = self.receiver
            if receiver is None:  # checked by retrieve(); keeps mypy and -O honest
                raise ConfigError("C-MOVE retrieval without a storage SCP receiver")
            return _retrieve.move(assoc, receiver, self.destination, self.peer, request, sink)

        def stopped() -> bool:
            return any(e is not None and e.is_set() for e in stops)

        try:
            while not stopped():
                try:
                    index, request = work.get_nowait()
                except queue.Empty:
                    break
                if assoc is None or not assoc.is_established:
                    assoc = open_association(ae, self.peer, ext_neg=roles, evt_handlers=handlers)
                report = run(assoc, request)
                live = assoc
                broken = report.status is None or not live.is_established
                if broken or not _isolate(
                    report,
                    request,
                    functools.partial(run, live),
                    functools.partial(_answered_on, live),
                    stopped,
                    isolate,
                ):
                    close_association(assoc, failed=True)
                    assoc = None
                reports[index] = report
        finally:
            if assoc is not None:
                close_association(assoc)

    def _work_dcmtk(
        self,
        work: queue.SimpleQueue[tuple[int, RetrieveRequest]],
        reports: dict[int, RetrieveReport],
        sink: Sink,
        stops: tuple[threading.Event, threading.Event | None],
        isolate: int,
    ) -> None:
        """``_work`` with dcmtk's getscu (``mdm.dicom.getscu``): one process per request."""
        program = getscu.binary(self.getscu)

        def stopped() -> bool:
            return any(e is not None and e.is_set() for e in stops)

        def run(request: RetrieveRequest) -> RetrieveReport:
            return getscu.get(
                program,
                self.calling_aet,
                self.settings,
                self.peer,
                request,
                sink,
                self.spool_dir,
                stopped,
            )

        while not stopped():
            try:
                index, request = work.get_nowait()
            except queue.Empty:
                break
            report = run(request)
            _isolate(report, request, run, lambda alone: alone.status is not None, stopped, isolate)
            reports[index] = report

    def iter_retrieve(self, requests: Sequence[RetrieveRequest], *, buffer: int = 32) -> Retrieval:
        """Retrieval as an iterator of ``ReceivedInstance`` (a bounded queue in between)."""
        return Retrieval(self, requests, buffer)


def _answered_on(assoc: Association, report: RetrieveReport) -> bool:
    """A retry that got a final status over an association still up (pynetdicom engine)."""
    return report.status is not None and assoc.is_established


def _isolate(
    report: RetrieveReport,
    request: RetrieveRequest,
    run: Callable[[RetrieveRequest], RetrieveReport],
    healthy: Callable[[RetrieveReport], bool],
    stopped: Callable[[], bool],
    isolate: int,
) -> bool:
    """Ask for each instance *report* misses alone, so that exactly the broken ones fail.

    Orthanc stops a C-GET at the first failed sub-operation and answers a bare 0xC000 to a
    C-GET whose UID list names one unknown instance. Both engines use this; it stops at the
    first retry that is not *healthy* (no final status: the PACS or the link broke down, and
    a thousand more retries would each wait out their timeouts) and returns False then.
    """
    if report.ok or not report.missing or not isolate:
        return True
    for uid in report.missing[:isolate]:
        if stopped():
            break
        if not (request.series_of.get(uid) or request.series_uid):
            continue  # IMAGE level needs the series UID; C-FIND did not say
        alone = run(request.single(uid))
        report.absorb(alone)
        if not healthy(alone):
            return False
    return True
