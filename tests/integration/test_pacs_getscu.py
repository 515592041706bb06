"""The dcmtk engine (``engine = "dcmtk"``): C-GET received by dcmtk's getscu, from a real
Orthanc, reconciled exactly like the pynetdicom engine (tests/integration/test_pacs_orthanc.py).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdm.dicom import getscu
from mdm.dicom.corpus import CorpusSpec, generate, to_bytes
from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveRequest
from mdm.dicom.scp import ReceivedInstance
from mdm.errors import AssociationRejected, TransportError
from mdm.settings import DicomSettings, PacsSettings
from tests.helpers.orthanc import Orthanc, orthanc_server, require_orthanc
from tests.helpers.ports import free_port
from tests.helpers.tools import require_tool

pytestmark = pytest.mark.orthanc

SPEC = CorpusSpec(patients=2, studies_per_patient=1, series_per_study=2, instances_per_series=5)


@pytest.fixture(scope="module")
def corpus() -> dict[str, object]:
    return {row.sop_instance_uid: (row, ds) for row, ds in generate(SPEC)}


@pytest.fixture(scope="module")
def orthanc(corpus: dict[str, object]) -> Iterator[Orthanc]:
    require_tool("getscu", package="dcmtk")
    modalities = {"mdm": ("MDM", "127.0.0.1", free_port())}
    with orthanc_server(require_orthanc(), modalities=modalities) as server:
        server.upload(to_bytes(ds) for _, ds in corpus.values())  # type: ignore[misc]
        yield server


def pacs(orthanc: Orthanc, spool: Path, **overrides: object) -> Pacs:
    settings = PacsSettings(
        aet=orthanc.aet, host=orthanc.host, port=orthanc.dicom_port, engine="dcmtk"
    )
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    return Pacs("orthanc", settings, DicomSettings(ae_title="MDM", spool_dir=str(spool)))


def test_instances_arrive_whole_and_reconciled_and_the_spool_stays_private(
    orthanc: Orthanc, corpus: dict[str, object], tmp_path: Path
) -> None:
    received: dict[str, ReceivedInstance] = {}
    modes: set[int] = set()

    def sink(instance: ReceivedInstance) -> None:
        received[instance.sop_instance_uid] = instance
        for spool in tmp_path.iterdir():
            try:  # the other association's spool may be removed between listing and stat
                modes.add(stat.S_IMODE(os.stat(spool).st_mode))
            except FileNotFoundError:
                continue

    studies = sorted({row.study_uid for row, _ in corpus.values()})  # type: ignore[misc]
    reports = pacs(orthanc, tmp_path, max_associations=2).retrieve(
        [RetrieveRequest(uid) for uid in studies], sink
    )
    for report in reports:
        report.raise_for_failure()
        assert report.completed == len(report.expected) == 10
        assert report.status == 0
    assert received.keys() == corpus.keys()
    for uid, instance in received.items():
        _row, original = corpus[uid]  # type: ignore[misc]
        got = instance.dataset()
        assert got.SOPInstanceUID == uid
        assert got.PixelData == original.PixelData
        assert instance.sop_class_uid == original.SOPClassUID
        assert instance.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
    assert modes == {0o700}, "originals land in a directory only the worker can read"
    assert list(tmp_path.iterdir()) == [], "nothing is left in the spool"


def test_a_lost_instance_fails_alone_the_others_arrive(orthanc: Orthanc, tmp_path: Path) -> None:
    spec = CorpusSpec(
        patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=4, seed=77
    )
    rows = [row for row, _ in generate(spec)]
    orthanc.upload(to_bytes(ds) for _, ds in generate(spec))
    p = pacs(orthanc, tmp_path)
    [planned] = p.plan([RetrieveRequest(rows[0].study_uid, rows[0].series_uid)])
    lost = rows[1].sop_instance_uid
    orthanc.storage_file(lost).unlink()  # behind Orthanc's back, after C-FIND promised it
    got: list[str] = []
    [report] = p.retrieve([planned], lambda i: got.append(i.sop_instance_uid))
    assert sorted(got) == sorted(report.received) == sorted(planned.expected - {lost})
    assert list(report.failed) == [lost]
    assert "not delivered even when asked for alone" in report.failed[lost]
    assert not report.missing
    assert not report.ok


def test_an_unknown_instance_is_failed_and_the_real_one_received(
    orthanc: Orthanc, corpus: dict[str, object], tmp_path: Path
) -> None:
    row, _ = next(iter(corpus.values()))  # type: ignore[misc]
    ghost = "2.25.1234567890123456789"
    request = RetrieveRequest(
        row.study_uid, row.series_uid, sop_instance_uids=(row.sop_instance_uid, ghost)
    )
    [report] = pacs(orthanc, tmp_path).retrieve([request], lambda i: None)
    assert report.received == [row.sop_instance_uid]
    assert list(report.failed) == [ghost]
    [unisolated] = pacs(orthanc, tmp_path).retrieve([request], lambda i: None, isolate=0)
    assert ghost in unisolated.missing
    assert "getscu: final status Failed" in unisolated.error
    assert unisolated.status == 0xC000


def test_a_wrong_called_aet_is_rejected(orthanc: Orthanc, tmp_path: Path) -> None:
    with pytest.raises(AssociationRejected, match="rejected the association"):
        pacs(orthanc, tmp_path, aet="NOT-ORTHANC").retrieve(
            [RetrieveRequest("1.2.3", expected=frozenset({"1.2.3.4"}))], print
        )


def test_a_pacs_that_does_not_listen_is_a_transport_error(tmp_path: Path) -> None:
    require_tool("getscu", package="dcmtk")
    settings = PacsSettings(aet="NOBODY", port=free_port(), engine="dcmtk", acse_timeout=5)
    nobody = Pacs("nobody", settings, DicomSettings(spool_dir=str(tmp_path)))
    request = RetrieveRequest("1.2.3", expected=frozenset({"1.2.3.4"}))
    with pytest.raises(TransportError, match="cannot reach PACS 'nobody'"):
        nobody.retrieve([request], print)
    assert list(tmp_path.iterdir()) == []


def test_getscu_runs_with_the_small_dictionary_built_from_dcmtks() -> None:
    """The Debian dcmtk's dicom.dic is found, and the retrievals above ran with the small
    dictionary built from it (``getscu.environment`` is what every run gets)."""
    require_tool("getscu", package="dcmtk")
    small = getscu.small_dictionary()
    assert small is not None, "dcmtk's dicom.dic not found: getscu would load everything"
    assert getscu.environment()["DCMDICTPATH"] == str(small)
    assert "CommandGroupLength" in small.read_text(encoding="latin-1")
