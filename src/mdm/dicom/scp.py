"""MDM's own storage SCP: the C-MOVE destination (and the base of the push receiver).

``build_ae`` makes an AE that accepts every storage SOP class in every transfer syntax, so a
PACS can send whatever it stores without transcoding (PS3.4 Annex B). ``start`` runs it in a
background thread with handlers *bound with extra arguments* (pynetdicom's
``(event, handler, [args])`` form) rather than closures over globals, so several receivers can
live in one process (tests, the recall worker, ``mdm serve dicom``).

Instances are never decoded here: ``event.encoded_dataset()`` gives the Part 10 bytes exactly
as the PACS sent them (preamble, file meta, dataset). Decoding and re-encoding cost 40-70 % more
client CPU than the whole DIMSE exchange (docs/pacs.md); the anonymizer decodes once, later.

Routing: the storage SCP of a C-MOVE cannot tell which of our C-MOVE requests a C-STORE
belongs to (the Move Originator fields are optional, and message IDs repeat across
associations), but every retrieval knows which SOP Instance UIDs it expects from its C-FIND.
``StorageReceiver`` therefore routes by the C-STORE's Affected SOP Instance UID. Instances
nobody waits for go to ``on_unsolicited`` (the push receiver) or are refused with 0x0124.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from mdm._log import quiet_pynetdicom
from mdm.dicom.scu import (
    CANNOT_UNDERSTAND,
    NODELAY_HANDLERS,
    NOT_AUTHORISED,
    OUT_OF_RESOURCES,
    SUCCESS,
    VERIFICATION,
)
from mdm.errors import UsageError
from mdm.settings import DicomSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedInstance:
    """One instance as received: its UIDs from the DIMSE command and its Part 10 bytes.

    ``data`` is a complete DICOM file (128-byte preamble, ``DICM``, file meta, dataset in the
    transfer syntax the PACS chose), ready to be written, hashed or handed to another process
    without decoding. ``dataset()`` decodes it when a caller really needs a pydicom Dataset.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data: bytes

    @classmethod
    def from_event(cls, event: evt.Event) -> ReceivedInstance:
        request = event.request
        if not isinstance(request, C_STORE):
            raise TypeError(f"not a C-STORE request: {type(request).__name__}")
        return cls(
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            data=event.encoded_dataset(include_meta=True),
        )

    def dataset(self) -> Dataset:
        return dcmread(io.BytesIO(self.data))

    def __repr__(self) -> str:
        return (
            f"ReceivedInstance({self.sop_instance_uid}, class={self.sop_class_uid}, "
            f"ts={self.transfer_syntax_uid}, {len(self.data)} bytes)"
        )


#: What a retrieval does with an instance: returns the C-STORE status to answer with.
Deliver = Callable[[ReceivedInstance], int]
#: What a caller does with an instance: raise to refuse it (the PACS is told 0xA700).
Sink = Callable[[ReceivedInstance], None]


class StorageReceiver:
    """Routes incoming C-STOREs to the retrieval that expects each SOP Instance UID."""

    def __init__(self, on_unsolicited: Sink | None = None) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Deliver] = {}
        self._on_unsolicited = on_unsolicited
        #: Instances refused because nobody expected them (count only: UIDs are not PHI-free
        #: enough to keep around forever, and the count is what monitoring needs).
        self.refused = 0

    @contextlib.contextmanager
    def expect(self, uids: Iterable[str], deliver: Deliver) -> Iterator[None]:
        """Route *uids* to *deliver* while the ``with`` block runs (one C-MOVE)."""
        wanted = set(uids)
        with self._lock:
            busy = wanted & self._waiting.keys()
            if busy:
                raise UsageError(
                    f"{len(busy)} instance(s) are already being retrieved by another request "
                    f"(e.g. {min(busy)}); retrieve each instance once at a time"
                )
            for uid in wanted:
                self._waiting[uid] = deliver
        try:
            yield
        finally:
            with self._lock:
                for uid in wanted:
                    if self._waiting.get(uid) is deliver:
                        del self._waiting[uid]

    def store(self, instance: ReceivedInstance) -> int:
        with self._lock:
            deliver = self._waiting.get(instance.sop_instance_uid)
        if deliver is not None:
            return deliver(instance)
        if self._on_unsolicited is None:
            with self._lock:
                self.refused += 1
            logger.warning(
                "refused an unsolicited C-STORE of SOP class %s (no retrieval expects it)",
                instance.sop_class_uid,
            )
            return NOT_AUTHORISED
        try:
            self._on_unsolicited(instance)
        except Exception:
            logger.exception("the receiver failed to take an unsolicited instance")
            return OUT_OF_RESOURCES
        return SUCCESS


def handle_store(event: evt.Event, receiver: StorageReceiver) -> int:
    """``EVT_C_STORE`` handler, bound as ``(evt.EVT_C_STORE, handle_store, [receiver])``."""
    try:
        instance = ReceivedInstance.from_event(event)
    except Exception:
        logger.exception("could not read a C-STORE request")
        return CANNOT_UNDERSTAND
    return receiver.store(instance)


def handle_echo(event: evt.Event) -> int:
    """``EVT_C_ECHO`` handler: peers verify the destination before a C-MOVE."""
    return SUCCESS


def build_ae(dicom: DicomSettings) -> AE:
    """An AE accepting C-ECHO and every storage SOP class in every transfer syntax."""
    quiet_pynetdicom()
    ae = AE(ae_title=dicom.ae_title)
    ae.maximum_pdu_size = 0
    # A peer calling us by another AE title is misconfigured: refuse it (A-ASSOCIATE-RJ,
    # "called AE title not recognised") so the mistake shows at once. Any *calling* AE title
    # is accepted: a PACS only moves to destinations it was configured with.
    ae.require_called_aet = True
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    return ae


def handlers(receiver: StorageReceiver) -> list[Any]:
    return [
        *NODELAY_HANDLERS,
        (evt.EVT_C_STORE, handle_store, [receiver]),
        (evt.EVT_C_ECHO, handle_echo),
    ]


def start(
    dicom: DicomSettings, receiver: StorageReceiver, *, block: bool = False
) -> ThreadedAssociationServer | None:
    """Listen on ``dicom.host:dicom.port`` (0 = any free port: read ``server_address``).

    With ``block=False`` (the default) returns the running server; stop it with
    ``server.shutdown()``. With ``block=True`` serves until interrupted and returns ``None``.
    """
    ae = build_ae(dicom)
    server = ae.start_server((dicom.host, dicom.port), block=block, evt_handlers=handlers(receiver))
    if server is not None:
        host, port = server.server_address[:2]
        logger.info("storage SCP %s listening on %s:%s", dicom.ae_title, host, port)
    return server
