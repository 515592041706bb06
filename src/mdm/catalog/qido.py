"""QIDO-RS query parameters (PS3.18 §8.3.4) parsed into matching filters (PS3.4 C.2.2.2).

Pure parsing and validation: nothing here touches a database, so the query *semantics* are
testable on their own; ``metadata.search`` compiles a ``QidoQuery`` into SQL.

Searchable attributes are the whitelisted, typed and indexed ones of ``ATTRIBUTES`` (the QIDO-RS
required matching keys of PS3.18 §10.6.1, plus BodyPartExamined and a few instance keys); any
other key is refused with 400 rather than answered by a scan. Matching types, one function each:

- universal matching (C.2.2.2.3): an empty value, or ``*`` alone, matches everything and only
  asks for the attribute to be returned;
- single value matching (C.2.2.2.1): exact and case-sensitive, except PN, which MDM matches
  case-insensitively (the standard allows it, and pseudonyms are typed by people);
- list of UID matching (C.2.2.2.2): ``UID1,UID2`` or ``UID1\\UID2`` for UI attributes; code
  strings (Modality, ModalitiesInStudy) accept the same list form, meaning "any of";
- wildcard matching (C.2.2.2.4): ``*`` any run, ``?`` one character; not for UI, DA, TM or
  numbers; ``%``, ``_`` and the escape character are escaped before becoming SQL ``LIKE``;
- range matching (C.2.2.2.5): ``a-b``, ``a-``, ``-b`` on DA and TM; bounds are normalised so
  that lexical comparison of the stored ``YYYYMMDD`` / ``HHMMSS.FFFFFF`` strings is correct,
  the upper bound being padded to the end of its precision (``-1200`` includes 12:00:59).

``fuzzymatching=true`` is accepted and answered with literal matching plus the PS3.18 Warning
(MDM has no fuzzy semantic matching of person names). ``limit``/``offset`` page the results;
``includefield`` names extra attributes (keyword or tag) or ``all``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mdm.errors import UsageError

Level = Literal["patient", "study", "series", "instance"]
Kind = Literal["universal", "single", "list", "wildcard", "range"]
LEVEL_ORDER: dict[str, int] = {"patient": 0, "study": 1, "series": 2, "instance": 3}
ESCAPE = "\\"

FUZZY_WARNING = (
    '299 mdm "The fuzzymatching parameter is not supported. '
    'Only literal matching has been performed."'
)
MORE_WARNING = '299 mdm "There are additional results that can be requested."'


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: str  # 8 upper-case hex digits, as in DICOM JSON
    vr: str
    level: Level
    column: str  # attribute name on the model of its level
    searchable: bool = True


def _a(kw: str, tag: str, vr: str, level: Level, column: str, searchable: bool = True) -> Attribute:
    return Attribute(kw, tag, vr, level, column, searchable)


ATTRIBUTES: tuple[Attribute, ...] = (
    _a("PatientName", "00100010", "PN", "patient", "patient_name"),
    _a("PatientID", "00100020", "LO", "patient", "patient_id"),
    _a("PatientBirthDate", "00100030", "DA", "patient", "patient_birth_date"),
    _a("PatientSex", "00100040", "CS", "patient", "patient_sex"),
    _a("StudyDate", "00080020", "DA", "study", "study_date"),
    _a("StudyTime", "00080030", "TM", "study", "study_time"),
    _a("AccessionNumber", "00080050", "SH", "study", "accession_number"),
    _a("ModalitiesInStudy", "00080061", "CS", "study", "modalities_in_study"),
    _a("ReferringPhysicianName", "00080090", "PN", "study", "referring_physician_name"),
    _a("StudyDescription", "00081030", "LO", "study", "study_description"),
    _a("StudyInstanceUID", "0020000D", "UI", "study", "study_uid"),
    _a("StudyID", "00200010", "SH", "study", "study_id"),
    _a("NumberOfStudyRelatedSeries", "00201206", "IS", "study", "number_of_series", False),
    _a("NumberOfStudyRelatedInstances", "00201208", "IS", "study", "number_of_instances", False),
    _a("Modality", "00080060", "CS", "series", "modality"),
    _a("SeriesDescription", "0008103E", "LO", "series", "series_description"),
    _a("BodyPartExamined", "00180015", "CS", "series", "body_part_examined"),
    _a("SeriesInstanceUID", "0020000E", "UI", "series", "series_uid"),
    _a("SeriesNumber", "00200011", "IS", "series", "series_number"),
    _a("NumberOfSeriesRelatedInstances", "00201209", "IS", "series", "number_of_instances", False),
    _a("PerformedProcedureStepStartDate", "00400244", "DA", "series", "pps_start_date"),
    _a("PerformedProcedureStepStartTime", "00400245", "TM", "series", "pps_start_time"),
    _a("SOPClassUID", "00080016", "UI", "instance", "sop_class_uid"),
    _a("SOPInstanceUID", "00080018", "UI", "instance", "sop_instance_uid"),
    _a("InstanceNumber", "00200013", "IS", "instance", "instance_number"),
    _a("NumberOfFrames", "00280008", "IS", "instance", "number_of_frames", False),
    _a("Rows", "00280010", "US", "instance", "rows", False),
    _a("Columns", "00280011", "US", "instance", "columns", False),
)
BY_KEYWORD = {a.keyword: a for a in ATTRIBUTES}
BY_TAG = {a.tag: a for a in ATTRIBUTES}

#: Attributes every answer at a level carries (PS3.18 Tables 10.6.3-3 to -5).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "study": (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
        "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
        "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "BodyPartExamined",
    ),
    "instance": (
        "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
        "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
    ),
}  # fmt: skip

_RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "emptyvaluematching"}
_NO_WILDCARD_VR = {"UI", "DA", "TM", "DT", "IS", "US", "DS"}
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


@dataclass(frozen=True)
class Filter:
    attribute: Attribute
    kind: Kind
    values: tuple[str, ...] = ()  # single: (v,); list: (v1, v2..); wildcard: (LIKE pattern,)
    low: str | None = None  # range bounds, normalised; None: open
    high: str | None = None


@dataclass(frozen=True)
class QidoQuery:
    level: Level
    filters: tuple[Filter, ...] = ()
    include: tuple[Attribute, ...] = ()
    include_tags: tuple[str, ...] = ()  # extra tags answered from the stored DICOM JSON
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def attributes_used(self) -> list[Attribute]:
        """Every attribute the caller filters on or asks for (for predicate authorisation)."""
        return [f.attribute for f in self.filters] + list(self.include)


def lookup(key: str) -> Attribute | None:
    """The whitelisted attribute for a keyword or 8-hex-digit tag (``00100020``)."""
    if _TAG_RE.match(key):
        return BY_TAG.get(key.upper())
    return BY_KEYWORD.get(key)


def like_pattern(value: str) -> str:
    """PS3.4 C.2.2.2.4 wildcards -> SQL LIKE, escaping ``%``, ``_`` and the escape itself."""
    out = []
    for ch in value:
        if ch in (ESCAPE, "%", "_"):
            out.append(ESCAPE + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _date(value: str, key: str) -> str:
    value = value.replace("-", "") if len(value) == 10 else value  # tolerate YYYY-MM-DD
    if not _DATE_RE.match(value):
        raise UsageError(f"{key}: {value!r} is not a DICOM date (YYYYMMDD)", key=key)
    return value


def _time(value: str, key: str, upper: bool) -> str:
    value = value.replace(":", "")
    if not _TIME_RE.match(value):
        raise UsageError(f"{key}: {value!r} is not a DICOM time (HHMMSS.FFFFFF)", key=key)
    whole, _, frac = value.partition(".")
    if upper:
        # hh or hhmm as an upper bound covers every second of its hour or minute.
        return whole + "235959"[len(whole) :] + "." + (frac + "999999")[:6]
    return whole + "000000"[len(whole) :] + ("." + frac if frac else "")


def normalize_time(value: str) -> str:
    """Stored form of a TM value: ``HHMMSS`` or ``HHMMSS.FFFFFF`` (lexically comparable)."""
    return _time(value, "TM", upper=False)


def _range(attr: Attribute, value: str, key: str) -> Filter:
    low_s, _, high_s = value.partition("-")
    if not low_s and not high_s:
        raise UsageError(f"{key}: a range needs at least one bound", key=key)
    if attr.vr == "DA":
        low = _date(low_s, key) if low_s else None
        high = _date(high_s, key) if high_s else None
    else:
        low = _time(low_s, key, upper=False) if low_s else None
        high = _time(high_s, key, upper=True) if high_s else None
    if low is not None and high is not None and low > high:
        raise UsageError(f"{key}: range {value!r} ends before it starts", key=key)
    return Filter(attr, "range", low=low, high=high)


def parse_filter(attr: Attribute, value: str) -> Filter:
    """One ``{attributeID}={value}`` pair -> the PS3.4 C.2.2.2 matching it asks for."""
    key = attr.keyword
    if not attr.searchable:
        raise UsageError(f"{key} can be returned but not searched", key=key)
    if value in ("", "*"):
        return Filter(attr, "universal")  # C.2.2.2.3
    if attr.vr in ("DA", "TM") and "-" in value:
        return _range(attr, value, key)  # C.2.2.2.5
    parts = [p for p in re.split(r"[,\\]", value)] if ("," in value or "\\" in value) else []
    if parts and attr.vr in ("UI", "CS"):
        if any(not p for p in parts):
            raise UsageError(f"{key}: empty item in list {value!r}", key=key)
        for p in parts:
            _check_single(attr, p)
        return Filter(attr, "list", tuple(parts))  # C.2.2.2.2
    if "*" in value or "?" in value:
        if attr.vr in _NO_WILDCARD_VR:
            raise UsageError(f"{key}: wildcards are not allowed for VR {attr.vr}", key=key)
        return Filter(attr, "wildcard", (like_pattern(value),))  # C.2.2.2.4
    _check_single(attr, value)
    if attr.vr == "TM":
        value = normalize_time(value)
    elif attr.vr == "DA":
        value = _date(value, key)
    return Filter(attr, "single", (value,))  # C.2.2.2.1


def _check_single(attr: Attribute, value: str) -> None:
    key = attr.keyword
    if attr.vr == "UI" and (not _UID_RE.match(value) or len(value) > 64):
        raise UsageError(f"{key}: {value!r} is not a UID", key=key)
    if attr.vr == "DA":
        _date(value, key)
    if attr.vr == "TM":
        _time(value, key, upper=False)
    if attr.vr in ("IS", "US") and not value.lstrip("-").isdigit():
        raise UsageError(f"{key}: {value!r} is not an integer", key=key)


def _allowed(level: Level, attr: Attribute, fixed: Iterable[str]) -> bool:
    # A query at a level may match on its own attributes and on those of the levels above it
    # (PS3.18 §10.6.1.2: "/series" and "/instances" accept study and patient keys).
    return LEVEL_ORDER[attr.level] <= LEVEL_ORDER[level] or attr.keyword in fixed


def parse(
    level: Level,
    params: Iterable[tuple[str, str]],
    *,
    max_limit: int = 1000,
    fixed: Mapping[str, str] | None = None,
) -> QidoQuery:
    """Parse the query string pairs of a QIDO-RS request at *level*.

    *fixed* are the UIDs from the path (``/studies/{StudyInstanceUID}/series``): they become
    single-value filters, and a query parameter contradicting them is refused.
    """
    filters: dict[str, Filter] = {}
    include: list[Attribute] = []
    include_tags: list[str] = []
    include_all = fuzzy = False
    limit: int | None = None
    offset = 0
    warnings: list[str] = []
    for key, value in params:
        low = key.lower()
        if low in _RESERVED:
            if low == "limit":
                limit = _nonneg(value, key)
            elif low == "offset":
                offset = _nonneg(value, key)
            elif low == "fuzzymatching":
                fuzzy = _boolean(value, key)
            elif low == "emptyvaluematching":
                raise UsageError("emptyvaluematching is not supported", key=key)
            else:
                for item in (v.strip() for v in value.split(",")):
                    if item == "all":
                        include_all = True
                    elif (attr := lookup(item)) is not None:
                        include.append(attr)
                    elif _TAG_RE.match(item):
                        include_tags.append(item.upper())
                    elif item:
                        include_tags.append(_keyword_tag(item))
            continue
        attr = lookup(key)
        if attr is None:
            searchable = ", ".join(a.keyword for a in ATTRIBUTES if a.searchable)
            raise UsageError(f"{key} is not a searchable attribute (use one of: {searchable})")
        if not _allowed(level, attr, fixed or {}):
            raise UsageError(f"{attr.keyword} is a {attr.level} attribute: not searchable here")
        if attr.keyword in filters:
            raise UsageError(f"{attr.keyword} given twice", key=attr.keyword)
        filters[attr.keyword] = parse_filter(attr, value)
    for keyword, uid in (fixed or {}).items():
        given = filters.get(keyword)
        if given is not None and not (given.kind == "universal" or given.values == (uid,)):
            raise UsageError(f"{keyword} in the query contradicts the path", key=keyword)
        filters[keyword] = Filter(BY_KEYWORD[keyword], "single", (uid,))
    if fuzzy:
        warnings.append(FUZZY_WARNING)
    if limit is not None and limit > max_limit:
        limit = max_limit
    return QidoQuery(
        level=level,
        filters=tuple(filters.values()),
        include=tuple(dict.fromkeys(include)),
        include_tags=tuple(dict.fromkeys(include_tags)),
        include_all=include_all,
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
        warnings=tuple(warnings),
    )


def _nonneg(value: str, key: str) -> int:
    if not value.isdigit():
        raise UsageError(f"{key} must be a non-negative integer, got {value!r}", key=key)
    return int(value)


def _boolean(value: str, key: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise UsageError(f"{key} must be true or false, got {value!r}", key=key)


def _keyword_tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise UsageError(f"includefield: {keyword!r} is neither a DICOM keyword nor a tag")
    return f"{tag:08X}"
