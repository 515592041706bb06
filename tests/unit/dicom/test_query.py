"""C-FIND identifiers and typed records (no network)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mdm.dicom.query import (
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    build_query,
)
from mdm.errors import UsageError


def test_build_query_has_level_return_keys_and_matching() -> None:
    q = build_query(StudyRecord, {"PatientID": "P1", "StudyDate": "20200101-"})
    assert q.QueryRetrieveLevel == "STUDY"
    assert q.PatientID == "P1"
    assert q.StudyDate == "20200101-"
    assert q.StudyInstanceUID == ""
    assert q.NumberOfStudyRelatedInstances is None or q.NumberOfStudyRelatedInstances == ""
    assert build_query(PatientRecord).QueryRetrieveLevel == "PATIENT"
    assert build_query(InstanceRecord).QueryRetrieveLevel == "IMAGE"


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(UsageError, match="NotAKeyword"):
        build_query(StudyRecord, {"NotAKeyword": "x"})


def test_records_parse_values_and_keep_identity_out_of_repr() -> None:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    ds.PatientID = "SECRET-ID"
    ds.PatientName = "Doe^Jane"
    ds.StudyDate = "20240102"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.NumberOfStudyRelatedInstances = "12"
    ds.NumberOfStudyRelatedSeries = ""
    rec = StudyRecord.from_identifier(ds)
    assert rec.patient_name == "Doe^Jane"
    assert rec.modalities == ("CT", "MR")
    assert rec.number_of_instances == 12
    assert rec.number_of_series is None
    assert rec.accession_number == ""
    text = repr(rec)
    assert "Doe" not in text
    assert "SECRET-ID" not in text
    assert "1.2.3" in text


def test_series_and_instance_records() -> None:
    ds = Dataset()
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "MR"
    ds.SeriesNumber = "7"
    ds.SeriesDescription = "T1 Doe"
    rec = SeriesRecord.from_identifier(ds)
    assert (rec.modality, rec.series_number, rec.number_of_instances) == ("MR", 7, None)
    assert "Doe" not in repr(rec)
    ds.SOPInstanceUID = "1.2.3.4.5"
    inst = InstanceRecord.from_identifier(ds)
    assert (inst.sop_instance_uid, inst.instance_number, inst.sop_class_uid) == (
        "1.2.3.4.5",
        None,
        "",
    )


def test_patient_record_and_return_keys_cover_every_field() -> None:
    ds = Dataset()
    ds.PatientID = "SECRET-ID"
    ds.PatientName = "Doe^Jane"
    ds.PatientSex = "F"
    ds.NumberOfPatientRelatedStudies = "3"
    rec = PatientRecord.from_identifier(ds)
    assert (rec.patient_id, rec.patient_name, rec.sex, rec.birth_date) == (
        "SECRET-ID",
        "Doe^Jane",
        "F",
        "",
    )
    assert rec.number_of_studies == 3
    assert "SECRET-ID" not in repr(rec)
    assert "Doe" not in repr(rec)
    assert PatientRecord.KEYS == (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    )
    assert set(InstanceRecord.KEYS) == {
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    }
    for record in (PatientRecord, StudyRecord, SeriesRecord, InstanceRecord):
        query = build_query(record)
        assert all(keyword in query for keyword in record.KEYS)
        assert record.UNIQUE in record.KEYS
        assert len(set(record.KEYS)) == len(record.KEYS)
