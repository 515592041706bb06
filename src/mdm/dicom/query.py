"""C-FIND against a PACS, answered as typed records instead of raw identifiers.

Queries follow the hierarchical model of PS3.4 C.4.1.1.3: STUDY, SERIES and IMAGE levels on
the *Study Root* information model, each lower level naming the unique keys of its parents,
and PATIENT level on the *Patient Root* model. Orthanc tolerates shortcuts (PATIENT on Study
Root, SERIES without a StudyInstanceUID); dcmqrscp and pynetdicom's qrscp refuse them, so MDM
never takes them.

Two peer quirks are absorbed here rather than by every caller:

* pynetdicom's qrscp answers STUDY and SERIES queries with one identifier per *instance*:
  records are de-duplicated on their unique key, first answer wins;
* optional return keys a PACS does not support come back absent or empty: every field but the
  unique keys may be ``None`` / empty.

Records keep patient identity out of ``repr`` so that logging a record never logs PHI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from mdm.dicom.scu import (
    PATIENT_ROOT_FIND,
    PENDING,
    STUDY_ROOT_FIND,
    SUCCESS,
    Peer,
    describe,
    settle,
    status_of,
)
from mdm.errors import DimseFailure, UsageError


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _multi(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split("\\") if v)
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class PatientRecord:
    """One PATIENT-level match (Patient Root)."""

    LEVEL: ClassVar[str] = "PATIENT"
    UNIQUE: ClassVar[str] = "PatientID"
    KEYS: ClassVar[tuple[str, ...]] = (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    )

    patient_id: str = field(repr=False)
    patient_name: str = field(repr=False)
    birth_date: str = field(repr=False)
    sex: str = field(repr=False)
    number_of_studies: int | None

    @classmethod
    def from_identifier(cls, ds: Dataset) -> PatientRecord:
        return cls(
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex"),
            number_of_studies=_int(ds, "NumberOfPatientRelatedStudies"),
        )


@dataclass(frozen=True)
class StudyRecord:
    """One STUDY-level match: what registration needs about a study (original values)."""

    LEVEL: ClassVar[str] = "STUDY"
    UNIQUE: ClassVar[str] = "StudyInstanceUID"
    KEYS: ClassVar[tuple[str, ...]] = (
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )

    study_uid: str
    patient_id: str = field(repr=False)
    patient_name: str = field(repr=False)
    patient_birth_date: str = field(repr=False)
    patient_sex: str = field(repr=False)
    study_date: str = field(repr=False)
    study_time: str = field(repr=False)
    accession_number: str = field(repr=False)
    study_id: str = field(repr=False)
    description: str = field(repr=False)
    referring_physician: str = field(repr=False)
    modalities: tuple[str, ...]
    number_of_series: int | None
    number_of_instances: int | None

    @classmethod
    def from_identifier(cls, ds: Dataset) -> StudyRecord:
        return cls(
            study_uid=_text(ds, "StudyInstanceUID"),
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
            study_date=_text(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            description=_text(ds, "StudyDescription"),
            referring_physician=_text(ds, "ReferringPhysicianName"),
            modalities=_multi(ds, "ModalitiesInStudy"),
            number_of_series=_int(ds, "NumberOfStudyRelatedSeries"),
            number_of_instances=_int(ds, "NumberOfStudyRelatedInstances"),
        )


@dataclass(frozen=True)
class SeriesRecord:
    """One SERIES-level match within a study."""

    LEVEL: ClassVar[str] = "SERIES"
    UNIQUE: ClassVar[str] = "SeriesInstanceUID"
    KEYS: ClassVar[tuple[str, ...]] = (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    )

    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    description: str = field(repr=False)
    series_date: str = field(repr=False)
    series_time: str = field(repr=False)
    body_part: str
    number_of_instances: int | None

    @classmethod
    def from_identifier(cls, ds: Dataset) -> SeriesRecord:
        return cls(
            series_uid=_text(ds, "SeriesInstanceUID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            modality=_text(ds, "Modality"),
            series_number=_int(ds, "SeriesNumber"),
            description=_text(ds, "SeriesDescription"),
            series_date=_text(ds, "SeriesDate"),
            series_time=_text(ds, "SeriesTime"),
            body_part=_text(ds, "BodyPartExamined"),
            number_of_instances=_int(ds, "NumberOfSeriesRelatedInstances"),
        )


@dataclass(frozen=True)
class InstanceRecord:
    """One IMAGE-level match: the UIDs that address an instance for retrieval."""

    LEVEL: ClassVar[str] = "IMAGE"
    UNIQUE: ClassVar[str] = "SOPInstanceUID"
    KEYS: ClassVar[tuple[str, ...]] = (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    )

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    instance_number: int | None

    @classmethod
    def from_identifier(cls, ds: Dataset) -> InstanceRecord:
        return cls(
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            sop_class_uid=_text(ds, "SOPClassUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            instance_number=_int(ds, "InstanceNumber"),
        )


Record = PatientRecord | StudyRecord | SeriesRecord | InstanceRecord
R = TypeVar("R", PatientRecord, StudyRecord, SeriesRecord, InstanceRecord)


def build_query(
    record: type[Record],
    matching: Mapping[str, str] | None = None,
    keys: Sequence[str] | None = None,
) -> Dataset:
    """A C-FIND identifier for *record*'s level: its return keys, empty, plus *matching*.

    *keys* narrows the return keys (default: all of ``record.KEYS``). Fewer keys can be much
    cheaper: Orthanc reads every file from disk to answer a key it does not index.

    *matching* maps DICOM keywords to PS3.4 C.2.2.2 matching values: a single value, a
    wildcard (``Smith*``) or a range (``20200101-``). A keyword DICOM does not define raises
    ``UsageError`` naming it.
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = record.LEVEL
    for keyword in record.KEYS if keys is None else keys:
        setattr(ds, keyword, "")
    for keyword, value in (matching or {}).items():
        if value is None:
            continue
        if tag_for_keyword(keyword) is None:
            raise UsageError(f"{keyword!r} is not a DICOM keyword; cannot match on it")
        setattr(ds, keyword, value)
    return ds


def find_identifiers(
    assoc: Association, peer: Peer, query: Dataset, model: str = STUDY_ROOT_FIND
) -> Iterator[Dataset]:
    """Send one C-FIND and yield each matching identifier; raise on anything but success.

    Raises ``DimseFailure`` naming the PACS, the level and the status when the final status
    is not 0x0000, and when no final status arrived at all (association aborted, e.g. Orthanc
    refusing an unknown calling AE title, or DIMSE timeout): a partial answer is never
    passed off as complete. Consume the iterator to the end (``QuerySession`` does): an
    abandoned C-FIND leaves its remaining responses on the association.
    """
    level = str(query.get("QueryRetrieveLevel", "?"))
    final: Dataset | None = None
    settle(assoc)
    for status, identifier in assoc.send_c_find(query, model):
        code = status_of(status)
        if code in PENDING:
            if identifier is not None:
                yield identifier
            continue
        final = status
        break
    code = status_of(final)
    if code != SUCCESS:
        raise DimseFailure(
            f"C-FIND at {level} level on {peer} failed: {describe(code, final)}",
            pacs=peer.name,
            operation="C-FIND",
            status=-1 if code is None else code,
        )


def find(
    assoc: Association,
    peer: Peer,
    record: type[R],
    matching: Mapping[str, Any] | None = None,
    keys: Sequence[str] | None = None,
) -> Iterator[R]:
    """Typed C-FIND: records of *record*'s level matching *matching*, de-duplicated.

    Fields whose keys were left out of *keys* come back empty.
    """
    model = PATIENT_ROOT_FIND if record is PatientRecord else STUDY_ROOT_FIND
    query = build_query(record, matching, keys)
    seen: set[str] = set()
    for identifier in find_identifiers(assoc, peer, query, model):
        key = _text(identifier, record.UNIQUE)
        if not key or key in seen:
            continue
        seen.add(key)
        yield record.from_identifier(identifier)


class QuerySession:
    """C-FINDs over one open association (a walk sends hundreds; one association is enough)."""

    def __init__(self, assoc: Association, peer: Peer) -> None:
        self.assoc = assoc
        self.peer = peer

    def patients(self, matching: Mapping[str, Any] | None = None) -> list[PatientRecord]:
        return list(find(self.assoc, self.peer, PatientRecord, matching))

    def studies(self, matching: Mapping[str, Any] | None = None) -> list[StudyRecord]:
        return list(find(self.assoc, self.peer, StudyRecord, matching))

    def series(
        self, study_uid: str, matching: Mapping[str, Any] | None = None
    ) -> list[SeriesRecord]:
        keys = {**(matching or {}), "StudyInstanceUID": study_uid}
        return list(find(self.assoc, self.peer, SeriesRecord, keys))

    def instances(
        self,
        study_uid: str,
        series_uid: str,
        matching: Mapping[str, Any] | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[InstanceRecord]:
        match = {**(matching or {}), "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        return list(find(self.assoc, self.peer, InstanceRecord, match, keys))
