"""The storage SCP on loopback, driven by a real pynetdicom SCU: routing and statuses."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from mdm.dicom import scp
from mdm.dicom.corpus import CorpusSpec, generate
from mdm.dicom.pacs import Pacs
from mdm.dicom.scp import ReceivedInstance, StorageReceiver
from mdm.dicom.scu import Peer, associate, new_ae
from mdm.errors import AssociationRejected, TransportError, UsageError
from mdm.settings import DicomSettings, PacsSettings

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def server() -> Iterator[tuple[int, StorageReceiver]]:
    receiver = StorageReceiver()
    running = scp.start(DicomSettings(ae_title="MDM", port=0), receiver)
    assert running is not None
    try:
        yield running.server_address[1], receiver
    finally:
        running.shutdown()


def datasets(n: int) -> list[Dataset]:
    spec = CorpusSpec(
        patients=1,
        studies_per_patient=1,
        series_per_study=2,
        instances_per_series=n,
        rows=8,
        columns=8,
    )
    return [ds for _, ds in generate(spec)]


def send(port: int, items: list[Dataset]) -> tuple[list[int], list[int]]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT)
    ae.add_requested_context(MR)
    assoc = ae.associate("127.0.0.1", port, ae_title="MDM")
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(ds).Status) for ds in items]
    finally:
        assoc.release()
    return statuses, []


def test_expected_instances_are_routed_raw(server: tuple[int, StorageReceiver]) -> None:
    port, receiver = server
    items = datasets(2)
    got: list[ReceivedInstance] = []

    def deliver(instance: ReceivedInstance) -> int:
        got.append(instance)
        return 0

    wanted = [str(ds.SOPInstanceUID) for ds in items[:3]]
    with receiver.expect(wanted, deliver):
        statuses, _ = send(port, items)
    assert statuses == [0, 0, 0, 0x0124]
    assert [g.sop_instance_uid for g in got] == wanted
    assert receiver.refused == 1
    first = got[0]
    assert first.data[128:132] == b"DICM"
    assert first.dataset().PixelData == items[0].PixelData
    assert "bytes" in repr(first)
    assert str(items[0].PatientName) not in repr(first)
    # Once the retrieval is over, its UIDs are no longer routed.
    assert send(port, items[:1])[0] == [0x0124]


def test_same_instance_cannot_be_awaited_twice() -> None:
    receiver = StorageReceiver()

    with receiver.expect(["1.2.3"], lambda i: 0):
        busy = receiver.expect(["1.2.3", "1.2.4"], lambda i: 0)
        with pytest.raises(UsageError, match="already"), busy:
            pass


def test_unsolicited_goes_to_the_callback_and_failures_are_out_of_resources() -> None:
    taken: list[str] = []

    def take(instance: ReceivedInstance) -> None:
        if len(taken) == 1:
            raise OSError("disk full")
        taken.append(instance.sop_instance_uid)

    receiver = StorageReceiver(on_unsolicited=take)
    running = scp.start(DicomSettings(ae_title="MDM", port=0), receiver)
    assert running is not None
    try:
        statuses, _ = send(running.server_address[1], datasets(1))
    finally:
        running.shutdown()
    assert statuses == [0, 0xA700]
    assert len(taken) == 1


def test_echo_answers() -> None:
    running = scp.start(DicomSettings(ae_title="MDM", port=0), StorageReceiver())
    assert running is not None
    try:
        ae = AE(ae_title="PEER")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", running.server_address[1], ae_title="MDM")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        running.shutdown()


def test_pacs_echo_sets_tcp_nodelay_on_both_ends() -> None:
    """Nagle off on the SCU socket MDM opens and on the SCP socket MDM accepts."""
    seen: list[int] = []

    def probe(event: evt.Event) -> None:
        # Runs after scp.handlers' own EVT_CONN_OPEN handler.
        sock = event.assoc.dul.socket.socket
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    ae = scp.build_ae(DicomSettings(ae_title="MDM"))
    handlers = [*scp.handlers(StorageReceiver()), (evt.EVT_CONN_OPEN, probe)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        port = server.server_address[1]
        settings = PacsSettings(aet="MDM", host="127.0.0.1", port=port)
        pacs = Pacs("self", settings, DicomSettings(ae_title="PEER"))
        assert pacs.echo() < 5
        ae_scu = new_ae("PEER", settings)
        ae_scu.add_requested_context("1.2.840.10008.1.1")
        with associate(ae_scu, Peer.of("self", settings)) as assoc:
            mine = assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert mine != 0
        assert seen
        assert all(seen)
        with pytest.raises(AssociationRejected, match="Called AE title not recognised"):
            Pacs("self", PacsSettings(aet="OTHER", port=port)).echo()
    finally:
        server.shutdown()


# pynetdicom 3.0.4 shuts down but never closes the socket of a refused connection
# (transport.py, AssociationSocket.connect); Python reports it when the socket is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_nothing_listening_is_a_transport_error() -> None:
    from tests.helpers.ports import free_port

    settings = PacsSettings(port=free_port(), acse_timeout=2)
    with pytest.raises(TransportError, match="cannot reach PACS 'gone'"):
        Pacs("gone", settings).echo()
    gc.collect()  # report the leaked socket here, under this test's filter, not in a later test
