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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

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


def _key(keyword: str, parse: Callable[[Dataset, str], Any] = _text, *, phi: bool = False) -> Any:
    """A record field read from *keyword* by *parse*; ``phi`` keeps its value out of ``repr``.

    The keyword is named once, on the field: the level's return keys (``KEYS``) and the
    parsing (``from_identifier``) are both derived from it, so they cannot drift apart.
    """
    return field(repr=not phi, metadata={"keyword": keyword, "parse": parse})


@dataclass(frozen=True)
class _Record:
    """What every level's record shares: its keys come from its fields' ``_key`` metadata."""

    LEVEL: ClassVar[str]
    UNIQUE: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        # Runs before @dataclass processes the class: the Field objects are still class
        # attributes here, in declaration order.
        cls.KEYS = tuple(f.metadata["keyword"] for f in vars(cls).values() if isinstance(f, Field))

    @classmethod
    def from_identifier(cls, ds: Dataset) -> Self:
        values = {f.name: f.metadata["parse"](ds, f.metadata["keyword"]) for f in fields(cls)}
        return cls(**values)


@dataclass(frozen=True)
class PatientRecord(_Record):
    """One PATIENT-level match (Patient Root)."""

    LEVEL: ClassVar[str] = "PATIENT"
    UNIQUE: ClassVar[str] = "PatientID"

    patient_id: str = _key("PatientID", phi=True)
    patient_name: str = _key("PatientName", phi=True)
    birth_date: str = _key("PatientBirthDate", phi=True)
    sex: str = _key("PatientSex", phi=True)
    number_of_studies: int | None = _key("NumberOfPatientRelatedStudies", _int)


@dataclass(frozen=True)
class StudyRecord(_Record):
    """One STUDY-level match: what registration needs about a study (original values)."""

    LEVEL: ClassVar[str] = "STUDY"
    UNIQUE: ClassVar[str] = "StudyInstanceUID"

    study_uid: str = _key("StudyInstanceUID")
    patient_id: str = _key("PatientID", phi=True)
    patient_name: str = _key("PatientName", phi=True)
    patient_birth_date: str = _key("PatientBirthDate", phi=True)
    patient_sex: str = _key("PatientSex", phi=True)
    study_date: str = _key("StudyDate", phi=True)
    study_time: str = _key("StudyTime", phi=True)
    accession_number: str = _key("AccessionNumber", phi=True)
    study_id: str = _key("StudyID", phi=True)
    description: str = _key("StudyDescription", phi=True)
    referring_physician: str = _key("ReferringPhysicianName", phi=True)
    modalities: tuple[str, ...] = _key("ModalitiesInStudy", _multi)
    number_of_series: int | None = _key("NumberOfStudyRelatedSeries", _int)
    number_of_instances: int | None = _key("NumberOfStudyRelatedInstances", _int)


@dataclass(frozen=True)
class SeriesRecord(_Record):
    """One SERIES-level match within a study."""

    LEVEL: ClassVar[str] = "SERIES"
    UNIQUE: ClassVar[str] = "SeriesInstanceUID"

    series_uid: str = _key("SeriesInstanceUID")
    study_uid: str = _key("StudyInstanceUID")
    modality: str = _key("Modality")
    series_number: int | None = _key("SeriesNumber", _int)
    description: str = _key("SeriesDescription", phi=True)
    series_date: str = _key("SeriesDate", phi=True)
    series_time: str = _key("SeriesTime", phi=True)
    body_part: str = _key("BodyPartExamined")
    number_of_instances: int | None = _key("NumberOfSeriesRelatedInstances", _int)


@dataclass(frozen=True)
class InstanceRecord(_Record):
    """One IMAGE-level match: the UIDs that address an instance for retrieval."""

    LEVEL: ClassVar[str] = "IMAGE"
    UNIQUE: ClassVar[str] = "SOPInstanceUID"

    sop_instance_uid: str = _key("SOPInstanceUID")
    sop_class_uid: str = _key("SOPClassUID")
    series_uid: str = _key("SeriesInstanceUID")
    study_uid: str = _key("StudyInstanceUID")
    instance_number: int | None = _key("InstanceNumber", _int)


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
