"""Retrieval of instances by C-GET or C-MOVE over one association, with counts reconciled.

A PACS's own word on a retrieval is not enough: Orthanc 1.10 answers nearly every failure
with a bare 0xC000, stops a C-GET at the first failed sub-operation without naming the rest,
and a dropped association ends the exchange without any final status. So every retrieval
here starts from the SOP Instance UIDs C-FIND promised (``expected``), records each instance
that actually reached the sink (``received``) or was refused by it or listed as failed by the
peer (``failed``, with the reason), and computes what never came (``missing``). Only when the
final status is success *and* every expected instance arrived is the report ``ok``.

The sink runs in pynetdicom's association thread: while it runs, the PACS waits. A slow sink
thus applies back-pressure instead of filling memory; hand instances to a bounded queue if
the next step should overlap with retrieval (as ``Pacs.iter_retrieve`` does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import build_role, sop_class
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from mdm.dicom.scp import ReceivedInstance, Sink, StorageReceiver
from mdm.dicom.scu import (
    OUT_OF_RESOURCES,
    PENDING,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    SUCCESS,
    Peer,
    describe,
    settle,
    status_of,
)
from mdm.errors import DimseFailure, UsageError

#: One transfer syntax per presentation context (pitfall: the acceptor picks one TS per
#: context and Orthanc then transcodes, failing for codecs it lacks), uncompressed first.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
#: Storage SOP classes offered when C-FIND did not say which ones a retrieval will return.
COMMON_STORAGE: tuple[str, ...] = tuple(
    str(getattr(sop_class, name))
    for name in (
        "CTImageStorage",
        "EnhancedCTImageStorage",
        "MRImageStorage",
        "EnhancedMRImageStorage",
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalMammographyXRayImageStorageForPresentation",
        "UltrasoundImageStorage",
        "UltrasoundMultiFrameImageStorage",
        "NuclearMedicineImageStorage",
        "PositronEmissionTomographyImageStorage",
        "SecondaryCaptureImageStorage",
        "XRayAngiographicImageStorage",
        "RTImageStorage",
        "RTDoseStorage",
        "RTStructureSetStorage",
        "RTPlanStorage",
        "SegmentationStorage",
        "BasicTextSRStorage",
        "EnhancedSRStorage",
        "ComprehensiveSRStorage",
        "GrayscaleSoftcopyPresentationStateStorage",
        "EncapsulatedPDFStorage",
    )
)
MAX_CONTEXTS = 128


def storage_contexts(sop_classes: Iterable[str], reserved: int = 2) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs for a C-GET association, one TS per context.

    Every class gets every syntax of ``TRANSFER_SYNTAXES`` if that fits in the 128 contexts
    an association may propose (minus *reserved* for the Q/R models); otherwise the uncompressed
    little-endian pair only. Raises ``UsageError`` when even that does not fit: such a
    retrieval must use C-MOVE, whose destination accepts everything.
    """
    classes = sorted(set(sop_classes)) or list(COMMON_STORAGE)
    room = MAX_CONTEXTS - reserved
    for syntaxes in (TRANSFER_SYNTAXES, TRANSFER_SYNTAXES[:2]):
        if len(classes) * len(syntaxes) <= room:
            return [(c, ts) for c in classes for ts in syntaxes]
    raise UsageError(
        f"{len(classes)} SOP classes need more than {MAX_CONTEXTS} presentation contexts for "
        "C-GET; retrieve by C-MOVE (method = 'c-move') instead"
    )


def scp_roles(contexts: Sequence[tuple[str, str]]) -> list[SCP_SCU_RoleSelectionNegotiation]:
    """SCP/SCU role selection: a C-GET SCU must act as storage SCP (PS3.4 C.4.3.1)."""
    return [build_role(c, scp_role=True) for c in dict.fromkeys(c for c, _ in contexts)]


@dataclass(frozen=True)
class RetrieveRequest:
    """What to retrieve: a study, one series of it, or listed instances of it.

    ``expected`` is the set of SOP Instance UIDs the retrieval must deliver. For a study or a
    series it comes from C-FIND (``Pacs`` fills it in when left ``None``); for an
    instance-level request it is the listed UIDs.
    """

    study_uid: str
    series_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    expected: frozenset[str] | None = None
    sop_classes: frozenset[str] = frozenset()
    #: SOP Instance UID -> series UID, from C-FIND: lets a failed study-level retrieval be
    #: retried instance by instance (strict servers need the series UID at IMAGE level).
    series_of: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def single(self, uid: str) -> RetrieveRequest:
        """The request for instance *uid* alone (to isolate which instance fails)."""
        series = self.series_of.get(uid) or self.series_uid
        return RetrieveRequest(
            self.study_uid, series, (uid,), frozenset({uid}), self.sop_classes, self.series_of
        )

    @property
    def level(self) -> str:
        if self.sop_instance_uids:
            return "IMAGE"
        return "SERIES" if self.series_uid else "STUDY"

    def identifier(self) -> Dataset:
        """The C-GET/C-MOVE identifier: unique keys down to the request's level (PS3.4 C.4.2)."""
        if self.sop_instance_uids and not self.series_uid:
            raise UsageError("an instance-level retrieval needs the series UID too")
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level
        ds.StudyInstanceUID = self.study_uid
        if self.level in ("SERIES", "IMAGE"):
            ds.SeriesInstanceUID = self.series_uid
        if self.level == "IMAGE":
            # UID list matching (PS3.4 C.2.2.2.2): several instances in one request.
            uids = list(self.sop_instance_uids)
            ds.SOPInstanceUID = uids if len(uids) > 1 else uids[0]
        return ds

    def expected_uids(self) -> frozenset[str]:
        if self.expected is not None:
            return self.expected
        if self.sop_instance_uids:
            return frozenset(self.sop_instance_uids)
        raise UsageError("the expected instances of a study/series retrieval are unknown")


@dataclass
class RetrieveReport:
    """The outcome of one retrieval request, reconciled against what C-FIND promised."""

    pacs: str
    method: str
    request: RetrieveRequest
    expected: frozenset[str]
    received: list[str] = field(default_factory=list)
    #: SOP Instance UID -> why it failed (refused by the sink, or listed by the peer).
    failed: dict[str, str] = field(default_factory=dict)
    #: Delivered though C-FIND did not list them (added to the PACS since, or a lenient match).
    unexpected: list[str] = field(default_factory=list)
    #: Final DIMSE status; None when none came (association aborted, timeout).
    status: int | None = None
    completed: int | None = None
    failures: int | None = None
    warnings: int | None = None
    #: Association-level problem (abort, rejection, transport); empty when there was none.
    error: str = ""
    bytes_received: int = 0
    seconds: float = 0.0
    #: Missing instances retried one by one after the request failed (see ``Pacs.retrieve``).
    retried: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _seen: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def missing(self) -> list[str]:
        """Expected, but neither received nor reported failed: the PACS went silent on them."""
        return sorted(self.expected - set(self.received) - set(self.failed))

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.status == SUCCESS
            and not self.failed
            and not self.missing
            and not self.failures
        )

    def summary(self) -> str:
        """One line of counts and statuses, without identity and without original UIDs.

        Original UIDs can be linked back to the patient, and this line ends up in logs, error
        messages and (through the recall worker) in answers to grid users; the UIDs are in
        the report's lists, for the caller to map to pseudonyms.
        """
        text = (
            f"{self.method.upper()} of a {self.request.level.lower()} from PACS "
            f"{self.pacs!r}: {len(self.received)}/{len(self.expected)} received, "
            f"{len(self.failed)} failed, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected; final status {describe(self.status)}"
        )
        if self.completed is not None:
            text += (
                f" (peer counted {self.completed} completed, {self.failures or 0} failed, "
                f"{self.warnings or 0} warning)"
            )
        if self.retried:
            text += f"; {self.retried} missing instance(s) retried one by one"
        if self.error:
            text += f"; {self.error}"
        return text

    def raise_for_failure(self) -> None:
        """Raise ``DimseFailure`` (with the lists as attributes) unless the report is ok."""
        if not self.ok:
            raise DimseFailure(
                self.summary(),
                pacs=self.pacs,
                operation=self.method.upper(),
                status=-1 if self.status is None else self.status,
                failed=dict(self.failed),
                missing=self.missing,
            )

    def absorb(self, alone: RetrieveReport) -> None:
        """Merge the retry of one missing instance, retrieved alone, into this report."""
        with self._lock:
            self.received.extend(u for u in alone.received if u not in self._seen)
            self.unexpected.extend(u for u in alone.unexpected if u not in self._seen)
            self._seen.update(alone.received, alone.unexpected)
            self.bytes_received += alone.bytes_received
            self.seconds += alone.seconds
            self.retried += 1
            for uid in alone.expected - set(alone.received):
                self.failed[uid] = alone.failed.get(uid) or (
                    f"not delivered even when asked for alone: final status "
                    f"{describe(alone.status, None)}"
                )

    def deliver(self, sink: Sink, instance: ReceivedInstance) -> int:
        """Give *instance* to *sink* and record the outcome; returns the C-STORE status."""
        uid = instance.sop_instance_uid
        try:
            sink(instance)
        except Exception as exc:
            with self._lock:
                self.failed[uid] = f"refused by the receiving side: {type(exc).__name__}: {exc}"
            return OUT_OF_RESOURCES
        with self._lock:
            if uid in self._seen:
                # Sent twice (a PACS retrying a sub-operation): delivered again, counted once.
                return SUCCESS
            self._seen.add(uid)
            if uid in self.expected:
                self.received.append(uid)
            else:
                self.unexpected.append(uid)
            self.bytes_received += len(instance.data)
        return SUCCESS

    def finish(self, final: Dataset | None, identifier: Dataset | None) -> None:
        """Record the final response (counts and the peer's FailedSOPInstanceUIDList)."""
        self.status = status_of(final)
        if self.status is None or final is None:
            self.error = self.error or describe(None)
            return
        for attr, key in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failures", "NumberOfFailedSuboperations"),
            ("warnings", "NumberOfWarningSuboperations"),
        ):
            if key in final and final[key].value is not None:
                setattr(self, attr, int(final[key].value))
        listed = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
        if listed:
            uids = [listed] if isinstance(listed, str) else list(listed)
            with self._lock:
                for uid in uids:
                    why = f"the PACS reported this sub-operation failed ({describe(self.status)})"
                    self.failed.setdefault(str(uid), why)


class GetSession:
    """The C-STORE side of a C-GET association: routes to the request in progress."""

    def __init__(self) -> None:
        self.report: RetrieveReport | None = None
        self.sink: Sink | None = None

    def handle_store(self, event: object) -> int:
        instance = ReceivedInstance.from_event(event)  # type: ignore[arg-type]
        report, sink = self.report, self.sink
        if report is None or sink is None:
            return OUT_OF_RESOURCES
        return report.deliver(sink, instance)


Response = tuple[Dataset | None, Dataset | None]


def _drain(responses: Iterable[Response]) -> Response:
    final: Dataset | None = None
    ident: Dataset | None = None
    for status, identifier in responses:
        final, ident = status, identifier
        if status_of(status) not in PENDING:
            break
    return final, ident


def get(
    assoc: Association,
    session: GetSession,
    peer: Peer,
    request: RetrieveRequest,
    sink: Sink,
) -> RetrieveReport:
    """C-GET *request* on *assoc* (bound to *session*'s store handler)."""
    report = RetrieveReport(peer.name, "c-get", request, request.expected_uids())
    session.report, session.sink = report, sink
    start = time.perf_counter()
    settle(assoc)
    try:
        final, ident = _drain(assoc.send_c_get(request.identifier(), STUDY_ROOT_GET))
    finally:
        session.report, session.sink = None, None
        report.seconds = time.perf_counter() - start
    report.finish(final, ident)
    return report


def move(
    assoc: Association,
    receiver: StorageReceiver,
    destination: str,
    peer: Peer,
    request: RetrieveRequest,
    sink: Sink,
    *,
    grace: float = 2.0,
) -> RetrieveReport:
    """C-MOVE *request* to *destination* (our storage SCP, fed to *receiver*)."""
    report = RetrieveReport(peer.name, "c-move", request, request.expected_uids())
    start = time.perf_counter()

    def deliver(instance: ReceivedInstance) -> int:
        return report.deliver(sink, instance)

    with receiver.expect(report.expected, deliver):
        settle(assoc)
        final, ident = _drain(assoc.send_c_move(request.identifier(), destination, STUDY_ROOT_MOVE))
        report.finish(final, ident)
        # A PACS that answers before its last C-STORE completed (asynchronous C-MOVE) gets a
        # short grace for the stragglers it claims to have sent.
        deadline = time.perf_counter() + grace
        while (
            report.completed is not None
            and len(report.received) + len(report.unexpected) < report.completed
            and time.perf_counter() < deadline
        ):
            time.sleep(0.01)
    report.seconds = time.perf_counter() - start
    return report
