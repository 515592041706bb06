"""The PACS connector against a real Orthanc (Debian ``orthanc``) holding a synthetic corpus.

One Orthanc and one MDM storage SCP per module; the corpus is 3 patients x 2 studies x 2 series
x 5 small instances (CT and MR). Tests that damage data upload their own study first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from mdm.dicom.corpus import CorpusInstance, CorpusSpec, generate, to_bytes
from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveRequest
from mdm.dicom.scp import ReceivedInstance, StorageReceiver
from mdm.dicom.walk import WalkStats, walk
from mdm.errors import AssociationRejected, DimseFailure
from mdm.settings import DicomSettings, PacsSettings
from tests.helpers.orthanc import Orthanc, orthanc_server, require_orthanc

pytestmark = pytest.mark.orthanc

SPEC = CorpusSpec()
Corpus = dict[str, tuple[CorpusInstance, Dataset]]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return {row.sop_instance_uid: (row, ds) for row, ds in generate(SPEC)}


@pytest.fixture(scope="module")
def orthanc(corpus: Corpus, dicom: DicomSettings, receiver: StorageReceiver) -> Iterator[Orthanc]:
    binary = require_orthanc()
    with orthanc_server(binary, modalities={"mdm": ("MDM", "127.0.0.1", dicom.port)}) as server:
        server.upload(to_bytes(ds) for _, ds in corpus.values())
        yield server


def make_pacs(
    orthanc: Orthanc,
    dicom: DicomSettings,
    receiver: StorageReceiver | None = None,
    **overrides: object,
) -> Pacs:
    settings = PacsSettings(aet=orthanc.aet, host=orthanc.host, port=orthanc.dicom_port)
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    return Pacs("orthanc", settings, dicom, receiver=receiver)


def studies_of(corpus: Corpus) -> dict[str, list[CorpusInstance]]:
    out: dict[str, list[CorpusInstance]] = {}
    for row, _ in corpus.values():
        out.setdefault(row.study_uid, []).append(row)
    return out


def test_echo(orthanc: Orthanc, dicom: DicomSettings) -> None:
    assert make_pacs(orthanc, dicom).echo() < 5


def test_find_patients_on_patient_root(
    orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus
) -> None:
    patients = {p.patient_id: p for p in make_pacs(orthanc, dicom).find_patients()}
    for row, ds in corpus.values():
        assert patients[row.patient_id].patient_name == str(ds.PatientName)
        assert patients[row.patient_id].birth_date == ds.PatientBirthDate


def test_find_studies_by_patient_and_by_date(
    orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus
) -> None:
    pacs = make_pacs(orthanc, dicom)
    row, ds = next(iter(corpus.values()))
    studies = pacs.find_studies({"PatientID": row.patient_id})
    expected = {r.study_uid for r, _ in corpus.values() if r.patient_id == row.patient_id}
    assert {s.study_uid for s in studies} == expected
    mine = next(s for s in studies if s.study_uid == row.study_uid)
    assert mine.accession_number == ds.AccessionNumber
    assert mine.study_date == ds.StudyDate
    assert mine.number_of_instances == SPEC.series_per_study * SPEC.instances_per_series
    assert set(mine.modalities) == {"CT", "MR"}
    assert "patient_name" not in repr(mine)
    assert str(ds.PatientName) not in repr(mine)

    on_day = pacs.find_studies({"StudyDate": f"{ds.StudyDate}-{ds.StudyDate}"})
    assert row.study_uid in {s.study_uid for s in on_day}
    assert all(s.study_date == ds.StudyDate for s in on_day)


def test_find_series_and_instances(orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus) -> None:
    pacs = make_pacs(orthanc, dicom)
    row, _ = next(iter(corpus.values()))
    series = pacs.find_series(row.study_uid)
    assert sorted(s.modality for s in series) == ["CT", "MR"]
    assert all(s.number_of_instances == SPEC.instances_per_series for s in series)
    instances = pacs.find_instances(row.study_uid, row.series_uid)
    expected = {r.sop_instance_uid for r, _ in corpus.values() if r.series_uid == row.series_uid}
    assert {i.sop_instance_uid for i in instances} == expected
    assert {i.sop_class_uid for i in instances} == {row.sop_class_uid}
    assert sorted(i.instance_number or 0 for i in instances) == [1, 2, 3, 4, 5]


def test_walk_with_filters(orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus) -> None:
    pacs = make_pacs(orthanc, dicom)
    row, ds = next(iter(corpus.values()))
    stats = WalkStats()
    found = list(walk(pacs, patient_id=row.patient_id, stats=stats))
    mine = [r for r, _ in corpus.values() if r.patient_id == row.patient_id]
    assert {w.sop_instance_uid for w in found} == {r.sop_instance_uid for r in mine}
    assert (stats.studies, stats.series, stats.instances) == (2, 4, 20)
    assert not stats.mismatched
    first = next(w for w in found if w.sop_instance_uid == row.sop_instance_uid)
    assert first.study.accession_number == ds.AccessionNumber
    assert first.series.series_uid == row.series_uid
    assert first.series.modality == row.modality

    assert len(list(walk(pacs, study_uid=row.study_uid))) == 10
    dates = sorted({d.StudyDate for _, d in corpus.values()})
    since = dt.datetime.strptime(dates[-2], "%Y%m%d").date()
    recent = {w.study_uid for w in walk(pacs, since=since)}
    assert recent >= {r.study_uid for r, d in corpus.values() if d.StudyDate >= dates[-2]}
    assert not recent & {r.study_uid for r, d in corpus.values() if d.StudyDate < dates[-2]}


def test_cget_in_parallel_reconciled(
    orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus
) -> None:
    pacs = make_pacs(orthanc, dicom, method="c-get", max_associations=3)
    received: dict[str, ReceivedInstance] = {}
    barrier = threading.Barrier(2, timeout=20)
    threads: set[int] = set()
    lock = threading.Lock()

    def sink(instance: ReceivedInstance) -> None:
        # Each association delivers in its own thread: two of them must be inside the sink at
        # the same time, or this barrier breaks and the instance is refused.
        with lock:
            first = threading.get_ident() not in threads
            threads.add(threading.get_ident())
        if first and len(threads) <= 2:
            barrier.wait()
        with lock:
            received[instance.sop_instance_uid] = instance

    requests = [RetrieveRequest(uid) for uid in studies_of(corpus)]
    reports = pacs.retrieve(requests, sink)
    for report in reports:
        report.raise_for_failure()
        assert report.completed == len(report.expected) == 10
    assert len(threads) >= 2
    assert received.keys() == corpus.keys()
    for uid, instance in received.items():
        original = corpus[uid][1]
        got = instance.dataset()
        assert got.SOPInstanceUID == uid
        assert got.PixelData == original.PixelData
        assert instance.transfer_syntax_uid == original.file_meta.TransferSyntaxUID


def test_cmove_by_series_reconciled(
    orthanc: Orthanc, dicom: DicomSettings, receiver: StorageReceiver, corpus: Corpus
) -> None:
    pacs = make_pacs(orthanc, dicom, receiver, method="c-move", max_associations=2)
    series = {(r.study_uid, r.series_uid) for r, _ in corpus.values()}
    got: list[ReceivedInstance] = []
    lock = threading.Lock()

    def sink(instance: ReceivedInstance) -> None:
        with lock:
            got.append(instance)

    reports = pacs.retrieve([RetrieveRequest(st, se) for st, se in sorted(series)], sink)
    assert len(reports) == len(series)
    assert all(r.ok for r in reports), [r.summary() for r in reports if not r.ok]
    assert Counter(i.sop_instance_uid for i in got) == Counter(corpus.keys())
    sample = got[0]
    assert sample.dataset().PixelData == corpus[sample.sop_instance_uid][1].PixelData
    assert receiver.refused == 0


def test_iter_retrieve(orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus) -> None:
    pacs = make_pacs(orthanc, dicom)
    study = next(iter(studies_of(corpus)))
    retrieval = pacs.iter_retrieve([RetrieveRequest(study)], buffer=2)
    uids = [i.sop_instance_uid for i in retrieval]
    assert sorted(uids) == sorted(r.sop_instance_uid for r in studies_of(corpus)[study])
    assert [r.ok for r in retrieval.reports] == [True]


def test_iter_retrieve_left_early_cancels_the_rest(
    orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus
) -> None:
    pacs = make_pacs(orthanc, dicom, max_associations=1)
    retrieval = pacs.iter_retrieve([RetrieveRequest(uid) for uid in studies_of(corpus)], buffer=1)
    taken = []
    for instance in retrieval:
        taken.append(instance)
        if len(taken) == 3:
            break
    assert len(taken) == 3
    # The association is usable again at once: nothing is left hanging on the PACS side.
    assert pacs.echo() < 5


def test_wrong_called_aet_is_rejected(orthanc: Orthanc, dicom: DicomSettings) -> None:
    pacs = make_pacs(orthanc, dicom, aet="NOT-ORTHANC")
    with pytest.raises(AssociationRejected, match="Called AE title not recognised") as info:
        pacs.echo()
    assert info.value.pacs == "orthanc"  # type: ignore[attr-defined]
    with pytest.raises(AssociationRejected):
        pacs.retrieve([RetrieveRequest("1.2.3", expected=frozenset({"1.2.3.4"}))], print)


def test_unknown_calling_aet_is_aborted(orthanc: Orthanc, corpus: Corpus) -> None:
    # Orthanc accepts the association, then aborts on the first C-FIND from an AE title it
    # does not know: the SCU sees no final status at all, which must not pass for "no match".
    stranger = DicomSettings(ae_title="STRANGER")
    pacs = make_pacs(orthanc, stranger)
    with pytest.raises(DimseFailure, match="no final response") as info:
        pacs.find_studies()
    assert info.value.status == -1  # type: ignore[attr-defined]

    row, _ = next(iter(corpus.values()))
    request = RetrieveRequest(row.study_uid, expected=frozenset({row.sop_instance_uid}))
    [report] = pacs.retrieve([request], lambda i: None)
    assert report.status is None
    assert "association aborted" in report.error
    assert report.missing == [row.sop_instance_uid]
    assert report.retried == 0
    assert not report.ok


def upload_study(orthanc: Orthanc, seed: int) -> list[CorpusInstance]:
    spec = CorpusSpec(
        patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=4, seed=seed
    )
    rows = list(generate(spec))
    orthanc.upload(to_bytes(ds) for _, ds in rows)
    return [row for row, _ in rows]


@pytest.mark.parametrize(("method", "seed"), [("c-get", 41), ("c-move", 42)])
def test_instance_lost_behind_the_pacs_back(
    orthanc: Orthanc, dicom: DicomSettings, receiver: StorageReceiver, method: str, seed: int
) -> None:
    rows = upload_study(orthanc, seed)
    pacs = make_pacs(orthanc, dicom, receiver, method=method)
    [planned] = pacs.plan([RetrieveRequest(rows[0].study_uid, rows[0].series_uid)])
    assert planned.expected == {r.sop_instance_uid for r in rows}
    lost = rows[1].sop_instance_uid
    orthanc.storage_file(lost).unlink()

    got: list[str] = []
    [report] = pacs.retrieve([planned], lambda i: got.append(i.sop_instance_uid))
    assert not report.ok
    assert report.status not in (0, None)
    # The three good instances arrive (retried one by one if the PACS stopped at the lost
    # one), and exactly the lost one is failed, with the PACS's answer as the reason.
    assert sorted(got) == sorted(report.received) == sorted(planned.expected - {lost})
    assert list(report.failed) == [lost]
    assert not report.missing
    with pytest.raises(DimseFailure, match="3/4 received, 1 failed, 0 missing") as info:
        report.raise_for_failure()
    assert list(info.value.failed) == [lost]  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["c-get", "c-move"])
def test_unknown_instance_reported_missing(
    orthanc: Orthanc, dicom: DicomSettings, receiver: StorageReceiver, corpus: Corpus, method: str
) -> None:
    pacs = make_pacs(orthanc, dicom, receiver, method=method)
    row, _ = next(iter(corpus.values()))
    ghost = "2.25.1234567890123456789"
    request = RetrieveRequest(
        row.study_uid, row.series_uid, sop_instance_uids=(row.sop_instance_uid, ghost)
    )
    # Orthanc fails the whole list (0xC000) for C-GET, and moves what it has for C-MOVE; both
    # ways the retry one by one ends with the real instance received and the ghost failed.
    [report] = pacs.retrieve([request], lambda i: None)
    assert report.received == [row.sop_instance_uid]
    assert list(report.failed) == [ghost]
    assert "0xC000" in report.failed[ghost]
    assert not report.missing
    assert not report.ok

    [unisolated] = pacs.retrieve([request], lambda i: None, isolate=0)
    assert ghost in unisolated.missing
    assert unisolated.retried == 0


def test_sink_refusal_is_reported_per_instance(
    orthanc: Orthanc, dicom: DicomSettings, corpus: Corpus
) -> None:
    pacs = make_pacs(orthanc, dicom)
    row, _ = next(iter(corpus.values()))
    refused = row.sop_instance_uid

    def sink(instance: ReceivedInstance) -> None:
        if instance.sop_instance_uid == refused:
            raise OSError("disk full")

    [report] = pacs.retrieve([RetrieveRequest(row.study_uid, row.series_uid)], sink)
    assert "disk full" in report.failed[refused]
    assert not report.ok
    assert refused not in report.received
