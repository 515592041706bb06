"""Pure parts of retrieval: presentation contexts, identifiers, and count reconciliation."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mdm.dicom.retrieve import (
    COMMON_STORAGE,
    TRANSFER_SYNTAXES,
    RetrieveReport,
    RetrieveRequest,
    scp_roles,
    storage_contexts,
)
from mdm.dicom.scp import ReceivedInstance
from mdm.errors import DimseFailure, UsageError

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
A, B, C, X = "1.2.1", "1.2.2", "1.2.3", "1.2.9"


def test_one_transfer_syntax_per_context_for_known_classes() -> None:
    contexts = storage_contexts({CT, MR})
    assert len(contexts) == 2 * len(TRANSFER_SYNTAXES)
    assert len(set(contexts)) == len(contexts)
    assert {c for c, _ in contexts} == {CT, MR}
    roles = scp_roles(contexts)
    assert sorted(r.sop_class_uid for r in roles) == [CT, MR]
    assert all(r.scp_role for r in roles)


def test_unknown_classes_fall_back_to_common_uncompressed() -> None:
    contexts = storage_contexts(())
    assert {c for c, _ in contexts} == set(COMMON_STORAGE)
    assert len(contexts) <= 126


def test_too_many_classes_for_cget_asks_for_cmove() -> None:
    classes = {f"1.2.3.{i}" for i in range(64)}
    with pytest.raises(UsageError, match="C-MOVE"):
        storage_contexts(classes)


def test_identifier_levels() -> None:
    study = RetrieveRequest("1.2.3")
    assert study.level == "STUDY"
    assert "SeriesInstanceUID" not in study.identifier()
    series = RetrieveRequest("1.2.3", "1.2.3.4").identifier()
    assert (series.QueryRetrieveLevel, series.SeriesInstanceUID) == ("SERIES", "1.2.3.4")
    image = RetrieveRequest("1.2.3", "1.2.3.4", ("1.2.3.4.5", "1.2.3.4.6")).identifier()
    assert image.QueryRetrieveLevel == "IMAGE"
    assert list(image.SOPInstanceUID) == ["1.2.3.4.5", "1.2.3.4.6"]
    with pytest.raises(UsageError):
        RetrieveRequest("1.2.3", None, ("1.2.3.4.5",)).identifier()
    with pytest.raises(UsageError):
        RetrieveRequest("1.2.3").expected_uids()


def test_single_uses_the_series_found_by_cfind() -> None:
    request = RetrieveRequest("1.2.3", expected=frozenset({"9.1"}), series_of={"9.1": "1.2.3.7"})
    alone = request.single("9.1")
    assert (alone.level, alone.series_uid, alone.expected) == ("IMAGE", "1.2.3.7", {"9.1"})


def instance(uid: str) -> ReceivedInstance:
    return ReceivedInstance(CT, uid, "1.2.840.10008.1.2.1", b"x" * 10)


def final(status: int, completed: int, failed: int, failed_uids: list[str] | None = None):
    ds = Dataset()
    ds.Status = status
    ds.NumberOfCompletedSuboperations = completed
    ds.NumberOfFailedSuboperations = failed
    ds.NumberOfWarningSuboperations = 0
    ident = None
    if failed_uids:
        ident = Dataset()
        ident.FailedSOPInstanceUIDList = failed_uids
    return ds, ident


def test_report_ok_only_when_every_expected_instance_arrived() -> None:
    report = RetrieveReport("p", "c-get", RetrieveRequest("1"), frozenset({A, B}))
    assert report.deliver(lambda i: None, instance(A)) == 0
    report.finish(*final(0x0000, 1, 0))
    # The PACS said success; the count says otherwise.
    assert not report.ok
    assert report.missing == [B]
    with pytest.raises(DimseFailure, match="1/2 received, 0 failed, 1 missing") as info:
        report.raise_for_failure()
    assert info.value.missing == [B]  # type: ignore[attr-defined]

    report.deliver(lambda i: None, instance(B))
    report.deliver(lambda i: None, instance(B))  # sent twice: counted once
    assert report.ok
    assert report.received == [A, B]
    assert report.bytes_received == 20


def test_report_takes_the_failed_list_and_sink_refusals() -> None:
    report = RetrieveReport("p", "c-get", RetrieveRequest("1"), frozenset({A, B, C}))

    def sink(i: ReceivedInstance) -> None:
        if i.sop_instance_uid == A:
            raise OSError("disk full")

    assert report.deliver(sink, instance(A)) == 0xA700
    report.deliver(sink, instance(X))
    report.finish(*final(0xB000, 0, 2, [B]))
    assert "disk full" in report.failed[A]
    assert "0xB000" in report.failed[B]
    assert report.missing == [C]
    assert report.unexpected == [X]
    assert report.failures == 2


def test_no_final_status_is_an_error_not_success() -> None:
    report = RetrieveReport("p", "c-move", RetrieveRequest("1"), frozenset())
    report.finish(Dataset(), None)
    assert report.status is None
    assert "no final response" in report.error
    assert not report.ok


def test_absorb_names_the_instance_that_fails_alone() -> None:
    report = RetrieveReport("p", "c-get", RetrieveRequest("1"), frozenset({A, B}))
    report.finish(*final(0xC000, 0, 1))
    for uid, status in ((A, 0x0000), (B, 0xC000)):
        alone = RetrieveReport("p", "c-get", RetrieveRequest("1"), frozenset({uid}))
        if status == 0:
            alone.deliver(lambda i: None, instance(uid))
        alone.finish(*final(status, int(status == 0), int(status != 0)))
        report.absorb(alone)
    assert report.received == [A]
    assert list(report.failed) == [B]
    assert "0xC000" in report.failed[B]
    assert report.retried == 2
    assert "2 missing instance(s) retried" in report.summary()
