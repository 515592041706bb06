"""Associations to a PACS: opening them the same way everywhere, and reading DIMSE statuses.

Every SCU association MDM opens goes through :func:`associate`, so that three things are never
forgotten:

* ``TCP_NODELAY`` is set on the socket as soon as it connects (pynetdicom never sets it, and
  with Nagle's algorithm each small DIMSE message waits ~40 ms for a delayed ACK: a C-FIND then
  costs 50 ms instead of 4 ms; see docs/pacs.md);
* pynetdicom's identifier logging is off (:func:`mdm._log.quiet_pynetdicom`): identifiers
  carry patient names and IDs;
* a refused or unreachable peer becomes an MDM error that names the PACS, its address and the
  reason the peer gave (A-ASSOCIATE-RJ result, source and diagnostic), never a silent ``None``.

DIMSE statuses (PS3.7 Annex C) are read with :func:`status_of`, which also recognises the
*empty* status dataset pynetdicom yields when the association died or a DIMSE timeout expired.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from mdm._log import quiet_pynetdicom
from mdm.errors import AssociationRejected, TransportError
from mdm.settings import PacsSettings

logger = logging.getLogger(__name__)

#: DIMSE status codes MDM treats specially (PS3.7 Annex C, PS3.4 C.4).
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00
#: C-GET/C-MOVE finished but one or more sub-operations failed (PS3.4 C.4.2.1.5).
SUBOPS_WARNING = 0xB000
#: C-STORE answers of our SCP handlers (PS3.4 B.2.3).
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
NOT_AUTHORISED = 0x0124

EventHandler = tuple[Any, Any] | tuple[Any, Any, list[Any]]

# SOP classes by UID (PS3.4 Annex C / PS3.6): pynetdicom builds its ``sop_class`` names at run
# time, which type checkers cannot see.
VERIFICATION = UID("1.2.840.10008.1.1")
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")


def set_nodelay(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: disable Nagle on the association's socket.

    Bound on both sides (SCU and SCP) because the peer that sends the small trailing PDU is
    the one that stalls.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLERS: list[EventHandler] = [(evt.EVT_CONN_OPEN, set_nodelay)]


def new_ae(ae_title: str, pacs: PacsSettings) -> AE:
    """An application entity configured from *pacs* (timeouts, PDU size)."""
    quiet_pynetdicom()
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = pacs.acse_timeout
    ae.dimse_timeout = pacs.dimse_timeout
    ae.network_timeout = pacs.network_timeout
    ae.maximum_pdu_size = pacs.max_pdu
    return ae


@dataclass(frozen=True)
class Peer:
    """Who we talk to, for messages: the configured name and its DICOM address."""

    name: str
    aet: str
    host: str
    port: int

    @classmethod
    def of(cls, name: str, pacs: PacsSettings) -> Peer:
        return cls(name, pacs.aet, pacs.host, pacs.port)

    def __str__(self) -> str:
        return f"PACS {self.name!r} ({self.aet}@{self.host}:{self.port})"


def open_association(
    ae: AE,
    peer: Peer,
    *,
    ext_neg: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
    evt_handlers: Sequence[EventHandler] = (),
) -> Association:
    """Open an association to *peer* and return it established, or raise.

    Raises ``AssociationRejected`` when the peer answers A-ASSOCIATE-RJ, aborts during the
    negotiation or accepts none of our presentation contexts, and ``TransportError`` when it
    cannot be reached at all (connection refused, ACSE timeout).
    """
    answers: list[Any] = []
    connected: list[bool] = []

    def _on_acse(event: evt.Event) -> None:
        answers.append(getattr(event, "primitive", None))

    def _on_open(event: evt.Event) -> None:
        connected.append(True)

    handlers = [
        *NODELAY_HANDLERS,
        (evt.EVT_CONN_OPEN, _on_open),
        (evt.EVT_ACSE_RECV, _on_acse),
        *evt_handlers,
    ]
    start = time.monotonic()
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.aet,
        ext_neg=list(ext_neg) or None,
        evt_handlers=handlers,
    )
    if not assoc.is_established:
        waited = time.monotonic() - start
        timed_out = ae.acse_timeout is not None and waited >= 0.95 * ae.acse_timeout
        raise _refusal(assoc, peer, answers, bool(connected), timed_out)
    return assoc


def close_association(assoc: Association, *, failed: bool = False) -> None:
    """Release *assoc*, or abort it after a failure.

    Pitfall: re-using (or politely releasing) an association whose peer vanished blocks for
    the whole DIMSE timeout; abort is immediate.
    """
    if assoc.is_established:
        if failed:
            assoc.abort()
        else:
            assoc.release()


@contextlib.contextmanager
def associate(
    ae: AE,
    peer: Peer,
    *,
    ext_neg: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
    evt_handlers: Sequence[EventHandler] = (),
) -> Iterator[Association]:
    """``open_association`` as a context manager: released on exit, aborted on error."""
    assoc = open_association(ae, peer, ext_neg=ext_neg, evt_handlers=evt_handlers)
    try:
        yield assoc
    except BaseException:
        close_association(assoc, failed=True)
        raise
    close_association(assoc)


def _refusal(
    assoc: Association, peer: Peer, answers: list[Any], connected: bool, timed_out: bool
) -> Exception:
    if assoc.is_rejected:
        rsp = next((a for a in reversed(answers) if getattr(a, "result", None) in (1, 2)), None)
        if rsp is not None:
            why = f"{rsp.result_str}, source: {rsp.source_str}, reason: {rsp.reason_str}"
            return AssociationRejected(
                f"{peer} rejected the association from AE {assoc.requestor.ae_title!r}: {why}",
                pacs=peer.name,
                result=int(rsp.result),
                source=int(rsp.result_source),
                diagnostic=int(rsp.diagnostic),
            )
        return AssociationRejected(f"{peer} rejected the association", pacs=peer.name)
    if not connected:
        return TransportError(f"cannot reach {peer}: connection refused", pacs=peer.name)
    if timed_out:
        return TransportError(
            f"{peer} accepted the connection but did not answer the association request "
            "within the ACSE timeout",
            pacs=peer.name,
        )
    # Some peers (dcmqrscp at times) drop the connection instead of sending A-ASSOCIATE-RJ.
    return AssociationRejected(
        f"{peer} aborted or closed the association during negotiation (wrong called AE "
        "title, calling AE title not allowed, or no common presentation context)",
        pacs=peer.name,
    )


def settle(assoc: Association, timeout: float = 0.2) -> None:
    """Let the association's reactor thread resume before the next DIMSE request is sent.

    pynetdicom 3.0 pauses its reactor during ``send_c_*`` and checks a flag that the reactor
    sets when it blocks. When two requests follow each other on one association, the flag
    can still read "paused" from the previous request while the reactor has in fact been
    woken: the reactor then takes the first response of the new request off the queue
    ("Received unexpected C-FIND service message") and the request loses it. Observed here
    against Orthanc with TCP_NODELAY: an IMAGE-level C-FIND returned 4 of 5 instances; 6 of
    1,000 alternating SERIES/IMAGE C-FINDs lost a response without this wait, 0 of 1,000 with
    it. Waiting until the reactor has visibly resumed (its flag reads False) closes all but a
    window of a few bytecodes; the count checks (retrieval reports, the walk's second query)
    catch what slips through. The flag is read, never written; if a pynetdicom release drops
    it, this returns at once.
    """
    deadline = time.monotonic() + timeout
    while getattr(assoc, "_is_paused", False) and time.monotonic() < deadline:
        time.sleep(0.0002)


def status_of(status: Dataset | None) -> int | None:
    """The DIMSE status code of a response, or ``None`` when there was no response at all.

    pynetdicom yields an empty ``Dataset`` (no ``Status`` element) when the association was
    aborted, the connection dropped, or the DIMSE timeout expired: the caller must treat that
    as "the operation did not finish", not as success.
    """
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


def describe(code: int | None, status: Dataset | None = None) -> str:
    """``0xC000 (Failure: ...)`` plus the peer's ErrorComment if it sent one."""
    if code is None:
        return "no final response (association aborted, connection lost or DIMSE timeout)"
    text = f"0x{code:04X}"
    comment = status.get("ErrorComment") if status is not None else None
    if comment:
        text += f" ({comment})"
    return text
