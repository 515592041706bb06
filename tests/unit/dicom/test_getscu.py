"""The dcmtk engine's two judgements without a PACS: when a spooled file is complete, and
what getscu's log says about the retrieval (the real getscu runs in
tests/integration/test_pacs_getscu.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mdm.dicom import filemeta, getscu
from mdm.dicom.corpus import CorpusSpec, generate, to_bytes
from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveReport, RetrieveRequest
from mdm.dicom.scp import ReceivedInstance
from mdm.dicom.scu import Peer
from mdm.errors import AssociationRejected, ConfigError, TransportError
from mdm.settings import PacsSettings

PEER = Peer("main", "ORTHANC", "127.0.0.1", 4242)
ROWS = list(generate(CorpusSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                instances_per_series=3)))  # fmt: skip


def report() -> RetrieveReport:
    uids = frozenset(row.sop_instance_uid for row, _ in ROWS)
    return RetrieveReport("main", "c-get", RetrieveRequest(ROWS[0][0].study_uid), uids)


def spool_with(tmp_path: Path, count: int) -> Path:
    for row, ds in ROWS[:count]:
        (tmp_path / f"CT.{row.sop_instance_uid}").write_bytes(to_bytes(ds))
    return tmp_path


def test_files_are_delivered_only_when_no_more_than_the_responses_logged(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 2)
    got: list[ReceivedInstance] = []
    r = report()
    assert getscu._deliver(spool, r, got.append, room=1) == 0  # one may be half written
    assert got == []
    assert len(list(spool.iterdir())) == 2
    assert getscu._deliver(spool, r, got.append, room=2) == 2
    assert sorted(i.sop_instance_uid for i in got) == sorted(r.received)
    assert len(got) == 2
    assert list(spool.iterdir()) == [], "delivered files are removed at once"
    by_uid = {row.sop_instance_uid: ds for row, ds in ROWS}
    for instance in got:
        assert instance.data == to_bytes(by_uid[instance.sop_instance_uid])
        assert instance.sop_class_uid == by_uid[instance.sop_instance_uid].SOPClassUID
    spool_with(tmp_path, 3)  # the first two again (a PACS resending) and the third
    assert getscu._deliver(spool, r, got.append, room=1) == 0, "3 files, 1 response: wait"
    assert len(got) == 2
    assert getscu._deliver(spool, r, got.append, room=None) == 3  # getscu exited: all whole
    assert len(r.received) == 3


def test_a_resent_instance_does_not_let_a_half_written_file_through(tmp_path: Path) -> None:
    """The report counts a resent instance once; the hand-over must count files, or the file
    after a resend would be handed over while getscu is still writing it."""
    (row_a, ds_a), (row_b, ds_b) = ROWS[:2]
    got: list[ReceivedInstance] = []
    r = report()
    fd_r, fd_w = os.pipe()
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"CT.{row_a.sop_instance_uid}").write_bytes(to_bytes(ds_a))
    os.write(fd_w, b"I: Sending C-STORE Response\n")
    (spool / f"CT.{row_a.sop_instance_uid}.resent").write_bytes(to_bytes(ds_a))
    os.write(fd_w, b"I: Sending C-STORE Response\n")
    half = to_bytes(ds_b)[:3000]  # written, its response not logged yet

    def sink(instance: ReceivedInstance) -> None:
        got.append(instance)
        if len(got) == 2:  # getscu goes on: the next file is half written, more log follows
            (spool / f"CT.{row_b.sop_instance_uid}").write_bytes(half)
            os.write(fd_w, b"I: Received Store Request\n")
            os.close(fd_w)

    getscu._follow(fd_r, spool, r, sink, lambda: False)
    os.close(fd_r)
    assert [len(i.data) for i in got] == [len(to_bytes(ds_a))] * 2
    assert row_b.sop_instance_uid not in r.received
    assert (spool / f"CT.{row_b.sop_instance_uid}").exists(), "left for its response"


def test_a_stopped_retrieval_stops_reading_the_log(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 1)
    fd_r, fd_w = os.pipe()
    os.write(fd_w, b"I: Sending C-STORE Response\n" * 3)
    os.close(fd_w)
    got: list[ReceivedInstance] = []
    getscu._follow(fd_r, spool, report(), got.append, lambda: True)
    os.close(fd_r)
    assert got == []


@pytest.mark.parametrize(
    ("final", "code"),
    [("Success", 0x0000), ("Warning", 0xB000), ("Cancel", 0xFE00),
     ("Failed: UnableToProcess", 0xC000), ("Failed: IdentifierDoesNotMatchSOPClass", 0xA900)],
)  # fmt: skip
def test_the_final_status_and_counts_come_from_the_log(final: str, code: int) -> None:
    r = report()
    log = [
        "I: Received C-GET Response (Pending)",
        f"I: Received C-GET Response ({final})",
        "I:   Number of Completed Suboperations : 2",
        "I:   Number of Failed Suboperations    : 1",
        "I:   Number of Warning Suboperations   : 0",
    ]
    getscu._finish(r, log, 0, PEER)
    assert (r.status, r.completed, r.failures, r.warnings) == (code, 2, 1, 0)
    assert ("final status" in r.error) == (code != 0)


def test_no_final_status_is_an_error_and_rejection_and_refusal_are_raised() -> None:
    r = report()
    getscu._finish(r, ["E: Association Aborted"], 1, PEER)
    assert r.status is None
    assert "Association Aborted" in r.error
    with pytest.raises(AssociationRejected, match="rejected"):
        getscu._finish(
            report(), ["E: Association Rejected: Called AE Title Not Recognized"], 1, PEER
        )
    refused = [
        "E: Association Request Failed: 0006:031b",
        "E: TCP Initialization Error: Connection refused",
    ]
    with pytest.raises(TransportError, match="cannot reach PACS 'main'"):
        getscu._finish(report(), refused, 1, PEER)


def test_the_engine_is_checked_when_the_pacs_is_configured() -> None:
    with pytest.raises(ConfigError, match="engine"):
        Pacs("main", PacsSettings(engine="fast"))
    with pytest.raises(ConfigError, match="C-GET only"):
        Pacs("main", PacsSettings(engine="dcmtk", method="c-move"))
    assert Pacs("main", PacsSettings(engine="DCMTK")).engine == "dcmtk"


def test_a_missing_getscu_names_its_package() -> None:
    with pytest.raises(ConfigError, match="Debian package dcmtk"):
        getscu.binary("getscu-that-does-not-exist")


def test_the_file_meta_is_read_from_the_bytes_as_pydicom_reads_it(tmp_path: Path) -> None:
    from pydicom.filereader import read_file_meta_info

    for row, ds in ROWS:
        path = tmp_path / "f.dcm"
        path.write_bytes(to_bytes(ds))
        meta = read_file_meta_info(path)
        data = path.read_bytes()
        found = filemeta.read(data)
        assert found is not None
        uids = found.uids
        assert uids[0x0002] == meta.MediaStorageSOPClassUID
        assert uids[0x0003] == meta.MediaStorageSOPInstanceUID == row.sop_instance_uid
        assert uids[0x0010] == meta.TransferSyntaxUID == found.transfer_syntax
        assert data[found.end : found.end + 2] == b"\x08\x00"  # the dataset's first group
    assert filemeta.read(b"\0" * 132) is None
    assert filemeta.read(b"\0" * 128 + b"DICM" + b"\x02\x00\x10") is None, "truncated"


def test_getscu_gets_a_dictionary_of_what_it_parses_with_bit_preserving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from dcmtk's own dicom.dic: its command, meta and key lines only (same names and
    VRs), rebuilt if a temp cleaner removed it; no dictionary found: getscu's default."""
    source = tmp_path / "dicom.dic"
    source.write_text(
        "# dcmtk data dictionary\n"
        "(0000,0000)\tUL\tCommandGroupLength\t1\tDICOM\n"
        "(0000,0900)\tUS\tStatus\t1\tDICOM\n"
        "(0002,0010)\tUI\tTransferSyntaxUID\t1\tDICOM\n"
        "(0008,0052)\tCS\tQueryRetrieveLevel\t1\tDICOM\n"
        "(0010,0010)\tPN\tPatientName\t1\tDICOM\n"
        "(0020,000D)\tUI\tStudyInstanceUID\t1\tDICOM\n"
        '(0029,"SIEMENS CSA HEADER",10)\tOB\tCSAImageHeaderInfo\t1\tPrivateTag\n'
        + "".join(f"(0000,{n:04X})\tUS\tFiller{n}\t1\tDICOM\n" for n in range(0x1000, 0x1040)),
        encoding="latin-1",
    )
    monkeypatch.setattr(getscu, "_small", None)
    monkeypatch.setattr(getscu, "_small_tried", False)
    monkeypatch.setattr(getscu, "DICTIONARY_GLOBS", ())
    monkeypatch.setenv("DCMDICTPATH", f"/nowhere/dicom.dic{os.pathsep}{source}")
    small = getscu.small_dictionary()
    assert small is not None
    assert small != source
    lines = small.read_text(encoding="latin-1").splitlines()
    assert "(0000,0900)\tUS\tStatus\t1\tDICOM" in lines
    assert "(0008,0052)\tCS\tQueryRetrieveLevel\t1\tDICOM" in lines
    assert "(0020,000D)\tUI\tStudyInstanceUID\t1\tDICOM" in lines
    assert not [line for line in lines if "PatientName" in line or "SIEMENS" in line]
    assert len(lines) == 5 + 0x40
    assert getscu.environment()["DCMDICTPATH"] == str(small)
    small.unlink()
    again = getscu.small_dictionary()
    assert again is not None
    assert again.exists(), "rebuilt once removed"

    monkeypatch.setattr(getscu, "_small", None)
    monkeypatch.setattr(getscu, "_small_tried", False)
    monkeypatch.delenv("DCMDICTPATH")
    assert getscu.small_dictionary() is None
    assert "DCMDICTPATH" not in getscu.environment(), "none found: getscu's own default"
