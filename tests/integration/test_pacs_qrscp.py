"""The PACS connector against dcmtk ``dcmqrscp``: a strict Q/R server, not Orthanc.

It refuses the non-hierarchical queries Orthanc tolerates and returns none of Orthanc's
computed keys (NumberOf...Related..., ModalitiesInStudy, SOPClassUID at IMAGE level), so these
tests prove the connector does not lean on Orthanc's leniency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from mdm.dicom.corpus import CorpusInstance, CorpusSpec, generate, to_bytes
from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveRequest
from mdm.dicom.scp import ReceivedInstance, StorageReceiver
from mdm.dicom.walk import walk
from mdm.errors import AssociationRejected
from mdm.settings import DicomSettings, PacsSettings
from tests.helpers.qrscp import DcmQrScp, dcmqrscp_server
from tests.helpers.tools import require_tool

SPEC = CorpusSpec(seed=3)
Corpus = dict[str, tuple[CorpusInstance, Dataset]]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return {row.sop_instance_uid: (row, ds) for row, ds in generate(SPEC)}


@pytest.fixture(scope="module")
def qr(
    corpus: Corpus,
    dicom: DicomSettings,
    receiver: StorageReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DcmQrScp]:
    binary = require_tool("dcmqrscp", package="dcmtk")
    storescu = require_tool("storescu", package="dcmtk")
    files = tmp_path_factory.mktemp("corpus")
    paths: list[Path] = []
    for row, ds in corpus.values():
        path = files / f"{row.sop_instance_uid}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    with dcmqrscp_server(binary, destinations={"mdm": ("MDM", dicom.port)}) as server:
        server.load(paths, storescu)
        yield server


def make_pacs(qr: DcmQrScp, dicom: DicomSettings, receiver: StorageReceiver, **kw: object) -> Pacs:
    settings = PacsSettings(aet=qr.aet, host=qr.host, port=qr.port, **kw)  # type: ignore[arg-type]
    return Pacs("dcmqrscp", settings, dicom, receiver=receiver)


def test_echo_and_find_at_every_level(
    qr: DcmQrScp, dicom: DicomSettings, receiver: StorageReceiver, corpus: Corpus
) -> None:
    pacs = make_pacs(qr, dicom, receiver)
    assert pacs.echo() < 5
    rows = [row for row, _ in corpus.values()]
    assert {p.patient_id for p in pacs.find_patients()} == {r.patient_id for r in rows}
    studies = pacs.find_studies()
    assert {s.study_uid for s in studies} == {r.study_uid for r in rows}
    assert all(s.number_of_instances is None for s in studies)  # not computed by dcmqrscp
    row = rows[0]
    series = pacs.find_series(row.study_uid)
    assert {s.series_uid for s in series} == {
        r.series_uid for r in rows if r.study_uid == row.study_uid
    }
    instances = pacs.find_instances(row.study_uid, row.series_uid)
    assert {i.sop_instance_uid for i in instances} == {
        r.sop_instance_uid for r in rows if r.series_uid == row.series_uid
    }


def test_walk(
    qr: DcmQrScp, dicom: DicomSettings, receiver: StorageReceiver, corpus: Corpus
) -> None:
    pacs = make_pacs(qr, dicom, receiver)
    found = list(walk(pacs))
    assert sorted(w.sop_instance_uid for w in found) == sorted(corpus)
    row, ds = next(iter(corpus.values()))
    mine = next(w for w in found if w.sop_instance_uid == row.sop_instance_uid)
    assert mine.study.accession_number == ds.AccessionNumber
    assert mine.series.modality == row.modality


@pytest.mark.parametrize("method", ["c-get", "c-move"])
def test_retrieve_all_in_parallel(
    qr: DcmQrScp, dicom: DicomSettings, receiver: StorageReceiver, corpus: Corpus, method: str
) -> None:
    pacs = make_pacs(qr, dicom, receiver, method=method, max_associations=3)
    got: dict[str, ReceivedInstance] = {}
    lock = threading.Lock()

    def sink(instance: ReceivedInstance) -> None:
        with lock:
            got[instance.sop_instance_uid] = instance

    studies = sorted({row.study_uid for row, _ in corpus.values()})
    reports = pacs.retrieve([RetrieveRequest(uid) for uid in studies], sink)
    assert all(r.ok for r in reports), [r.summary() for r in reports if not r.ok]
    assert got.keys() == corpus.keys()
    uid = next(iter(got))
    assert got[uid].dataset().PixelData == corpus[uid][1].PixelData


def test_wrong_called_aet_is_rejected(
    qr: DcmQrScp, dicom: DicomSettings, receiver: StorageReceiver
) -> None:
    pacs = make_pacs(qr, dicom, receiver)
    pacs.peer = type(pacs.peer)(pacs.name, "NOBODY", qr.host, qr.port)
    # dcmqrscp answers A-ASSOCIATE-RJ, or at times just drops the connection: both are a
    # refusal of this association, not an unreachable server.
    with pytest.raises(AssociationRejected, match=r"rejected the association|closed the assoc"):
        pacs.echo()


@pytest.mark.parametrize("method", ["c-get", "c-move"])
def test_unknown_instance_fails_alone(
    qr: DcmQrScp, dicom: DicomSettings, receiver: StorageReceiver, corpus: Corpus, method: str
) -> None:
    pacs = make_pacs(qr, dicom, receiver, method=method)
    row, _ = next(iter(corpus.values()))
    ghost = "2.25.99999999999999999999"
    request = RetrieveRequest(
        row.study_uid, row.series_uid, sop_instance_uids=(row.sop_instance_uid, ghost)
    )
    [report] = pacs.retrieve([request], lambda i: None)
    assert report.received == [row.sop_instance_uid]
    assert list(report.failed) == [ghost]
    assert not report.missing
    assert not report.ok
