"""``Retrieval``: a PACS retrieval consumed as a stream of instances (``Pacs.iter_retrieve``).

``Pacs.retrieve`` pushes every instance into a sink from its association threads, at the
PACS's pace. A consumer that does slow work per instance (the recall worker anonymizes and
encrypts) wants to pull instead, and to start that work while the PACS is still sending. The
stream runs the retrieval in a background thread and hands instances over through a bounded
queue: memory stays at *buffer* instances, and a slow consumer throttles the PACS through the
blocked sink rather than piling instances up.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from mdm.dicom.retrieve import RetrieveReport, RetrieveRequest
from mdm.dicom.scp import ReceivedInstance
from mdm.errors import DicomError

if TYPE_CHECKING:
    from mdm.dicom.pacs import Pacs

__all__ = ["Retrieval"]

#: Put on the queue by the retrieval thread when it has finished, whatever the outcome: a
#: sentinel no instance can be equal to.
_END = object()


class Retrieval:
    """Iterate over the instances of a retrieval running in a background thread.

    At most *buffer* instances wait in memory; when the consumer is slower, the PACS is
    throttled through the sink (with the dcmtk engine getscu keeps receiving into its spool
    meanwhile). ``reports`` is filled once the iteration is exhausted. Leaving the loop early
    cancels the rest: with pynetdicom further instances are refused (the PACS sees 0xA700);
    with dcmtk getscu is killed, which aborts its association.
    """

    def __init__(self, pacs: Pacs, requests: Sequence[RetrieveRequest], buffer: int) -> None:
        self.pacs = pacs
        self.requests = list(requests)
        self.buffer = buffer
        self.reports: list[RetrieveReport] = []

    def __iter__(self) -> Iterator[ReceivedInstance]:
        items: queue.Queue[object] = queue.Queue(self.buffer)
        cancelled = threading.Event()
        failure: list[BaseException] = []

        def sink(instance: ReceivedInstance) -> None:
            # Wait in short steps: a consumer that has left must not block this forever.
            while not cancelled.is_set():
                try:
                    items.put(instance, timeout=0.1)
                    return
                except queue.Full:
                    continue
            raise DicomError("the consumer stopped reading this retrieval")

        def produce() -> None:
            try:
                self.reports = self.pacs.retrieve(self.requests, sink, cancel=cancelled)
            except BaseException as exc:
                failure.append(exc)
            finally:
                items.put(_END)

        thread = threading.Thread(target=produce, name="mdm-retrieval", daemon=True)
        thread.start()
        try:
            while (item := items.get()) is not _END:
                yield item  # type: ignore[misc]
        finally:
            cancelled.set()
            # Drain until the thread ends: its final put of _END must not block on a full queue.
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    items.get(timeout=0.1)
            thread.join()
        if failure:
            raise failure[0]
