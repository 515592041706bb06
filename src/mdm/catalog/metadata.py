"""The de-identified metadata catalog: patient / study / series / instance, searched by QIDO-RS.

The QIDO-RS matching keys are typed, indexed columns (``qido.ATTRIBUTES``); the rest of the
de-identified header is kept as DICOM JSON (PS3.18 Annex F): the series row keeps the full
header of its first instance, each instance keeps only what differs from it, and the study row
keeps the general study and patient modules (groups 0008, 0010, 0020, 0032, 0040). Bulk data
(``InlineBinary``, ``BulkDataURI``, pixel data) is never stored. Query answers are built from
the columns alone unless ``includefield`` asks for more, so no file is opened to answer a query
(the Orthanc/OHIF lesson).

Every search is scoped in SQL by the caller's ``list`` right (``access.scope_clause``), so
``limit``/``offset`` page over what the caller may see. Predicates are authorised too (AMGA's
"no inference through queries"): a caller whose visibility comes from series-level grants only
may not filter series or instances on study or patient attributes of studies it cannot list;
such a query is refused (403), not silently answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mdm.catalog import access, files, qido
from mdm.catalog.access import ROOT, Caller
from mdm.catalog.files import FileInfo
from mdm.catalog.models import Entry, Instance, Patient, Right, Series, Study
from mdm.catalog.qido import Attribute, Filter, QidoQuery
from mdm.errors import PermissionDenied, UsageError

MODELS: dict[str, Any] = {
    "patient": Patient,
    "study": Study,
    "series": Series,
    "instance": Instance,
}
_STUDY_GROUPS = {"0008", "0010", "0020", "0032", "0040"}
_INSTANCE_TAGS = {"00080018", "00080016", "00200013", "00280008", "00280010", "00280011"}


# ------------------------------------------------------------------------ DICOM JSON access


def value(dataset: Mapping[str, Any], tag: str) -> Any:
    """First value of *tag* in a DICOM JSON dataset (PN -> its Alphabetic group), or None."""
    element = dataset.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not values:
        return None
    first = values[0]
    if element.get("vr") == "PN" and isinstance(first, Mapping):
        return first.get("Alphabetic")
    return first


def _text(dataset: Mapping[str, Any], attr: Attribute) -> Any:
    v = value(dataset, attr.tag)
    if v is None or v == "":
        return None
    if attr.vr in ("IS", "US"):
        try:
            return int(v)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{attr.keyword} is not an integer: {v!r}") from exc
    if attr.vr == "TM":
        return qido.normalize_time(str(v))
    return str(v)


def _columns(dataset: Mapping[str, Any], level: str) -> dict[str, Any]:
    return {
        a.column: _text(dataset, a)
        for a in qido.ATTRIBUTES
        if a.level == level and a.searchable and a.keyword != "ModalitiesInStudy"
    }


def _plain(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset without bulk data and without the typed columns."""
    return {
        tag: el
        for tag, el in dataset.items()
        if isinstance(el, Mapping)
        and "InlineBinary" not in el
        and "BulkDataURI" not in el
        and not tag.startswith("7FE0")
        and tag not in qido.BY_TAG
    }


def instance_attrs(dataset: Mapping[str, Any], series_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What an instance's JSON keeps: no bulk data, no typed columns, nothing its series
    already says. Used at registration and when a recall brings the full header."""
    return {t: e for t, e in _plain(dataset).items() if series_attrs.get(t) != e}


# ---------------------------------------------------------------------------- registration


def _get_or_create(
    session: Session, model: Any, key: str, uid: str, values: dict[str, Any]
) -> tuple[Any, bool]:
    """The row of *model* whose *key* is *uid*, made from *values* if missing; ``(row, made)``."""
    cache: dict[tuple[str, str], Any] = session.info.setdefault("mdm.metadata", {})
    if (model.__name__, uid) in cache:
        return cache[model.__name__, uid], False
    column = getattr(model, key)
    found = session.scalar(select(model).where(column == uid))
    made = False
    if found is None:
        found, made = model(**{key: uid}, **values), True
        try:
            with session.begin_nested():
                session.add(found)
        except sa_exc.IntegrityError:  # a concurrent registration made it first
            found, made = session.scalar(select(model).where(column == uid)), False
            if found is None:
                raise
    cache[model.__name__, uid] = found
    return found, made


def register_instance(
    session: Session,
    caller: Caller,
    dataset: Mapping[str, Any],
    info: FileInfo = FileInfo(),  # noqa: B008 - frozen
    *,
    defer_counts: bool = False,
) -> tuple[Entry, bool]:
    """File + metadata of one de-identified instance; idempotent by pseudonymous SOP UID.

    With *defer_counts* the study and series instance counters are only accumulated: call
    ``flush_counts`` before the transaction ends (``registration.register_many`` does).
    """
    study_uid, series_uid, sop_uid = (
        value(dataset, t) for t in ("0020000D", "0020000E", "00080018")
    )
    patient_id = value(dataset, "00100020")
    if not (study_uid and series_uid and sop_uid):
        raise UsageError("a registration needs StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID")
    if not patient_id:
        raise UsageError("a registration needs the (pseudonymous) PatientID")
    entry, created = files.add_file(
        session, caller, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, info=info
    )
    if not created:
        return entry, False
    plain = _plain(dataset)
    pcols = _columns(dataset, "patient")
    pcols.pop("patient_id")
    patient, _ = _get_or_create(
        session, Patient, "patient_id", str(patient_id), {**pcols, "attrs": {}}
    )
    scols = _columns(dataset, "study")
    scols.pop("study_uid")
    general = {t: e for t, e in plain.items() if t[:4] in _STUDY_GROUPS and t not in _INSTANCE_TAGS}
    study, _ = _get_or_create(
        session,
        Study,
        "study_uid",
        study_uid,
        {**scols, "patient_fk": patient.id, "attrs": general},
    )
    secols = _columns(dataset, "series")
    secols.pop("series_uid")
    series_attrs = {t: e for t, e in plain.items() if t not in _INSTANCE_TAGS}
    series, made = _get_or_create(
        session, Series, "series_uid", series_uid,
        {**secols, "study_fk": study.id, "attrs": series_attrs},
    )  # fmt: skip
    if made:
        session.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(number_of_series=Study.number_of_series + 1)
        )
        # The UPDATE above holds the study row's lock until commit, so this fresh read sees
        # the modality any concurrent new series committed before us (none is lost). Not
        # FOR UPDATE: it conflicts with the key-share lock that another transaction's series
        # insert holds on this row, and two registrations of one study would deadlock.
        session.refresh(study, ["modalities_in_study"])
        modality = secols.get("modality")
        mods = [m for m in (study.modalities_in_study or "").split("\\") if m]
        if modality and modality not in mods:
            study.modalities_in_study = "\\".join(sorted([*mods, modality]))
    own = instance_attrs(dataset, series.attrs or {})
    icols = _columns(dataset, "instance")
    icols.pop("sop_instance_uid")
    session.add(
        Instance(
            sop_instance_uid=sop_uid, series_fk=series.id, entry_fk=entry.id, attrs=own, **icols
        )
    )
    counts: dict[tuple[Any, int], int] = session.info.setdefault("mdm.counts", {})
    for key in ((Study, study.id), (Series, series.id)):
        counts[key] = counts.get(key, 0) + 1
    if not defer_counts:
        flush_counts(session)
    session.flush()
    return entry, True


def flush_counts(session: Session) -> None:
    """Apply the instance counters accumulated by ``register_instance(defer_counts=True)``.

    One ``UPDATE ... SET n = n + k`` per study and series (atomic under concurrency), instead
    of two per instance.
    """
    counts: dict[tuple[Any, int], int] = session.info.pop("mdm.counts", {})
    for (model, pk), k in counts.items():
        session.execute(
            update(model)
            .where(model.id == pk)
            .values(number_of_instances=model.number_of_instances + k)
        )


# --------------------------------------------------------------------------------- search


def _match(column: Any, f: Filter) -> ColumnElement[bool]:
    """One PS3.4 C.2.2.2 matching type as SQL (values are bound parameters, never spliced)."""
    pn = f.attribute.vr == "PN"
    col = func.lower(column) if pn else column
    if f.kind == "single":  # C.2.2.2.1
        v: Any = f.values[0]
        v = int(v) if f.attribute.vr in ("IS", "US") else v.lower() if pn else v
        return col == v
    if f.kind == "list":  # C.2.2.2.2
        return col.in_(f.values)
    if f.kind == "wildcard":  # C.2.2.2.4
        pattern = f.values[0].lower() if pn else f.values[0]
        return col.like(pattern, escape=qido.ESCAPE)
    if f.kind == "range":  # C.2.2.2.5
        conds = [column.is_not(None)]
        if f.low is not None:
            conds.append(column >= f.low)
        if f.high is not None:
            conds.append(column <= f.high)
        return and_(*conds)
    raise AssertionError(f"unknown matching kind {f.kind}")


def _condition(f: Filter) -> ColumnElement[bool] | None:
    if f.kind == "universal":  # C.2.2.2.3
        return None
    if f.attribute.keyword == "ModalitiesInStudy":
        # Multi-valued: a study matches when one of its series' modalities matches.
        return exists().where(Series.study_fk == Study.id, _match(Series.modality, f))
    return _match(getattr(MODELS[f.attribute.level], f.attribute.column), f)


def _series_only_grants(session: Session, caller: Caller) -> bool:
    if caller.implicit(Right.LIST):
        return False
    paths = set(access.granted_paths(session, caller, Right.LIST))
    if ROOT in paths:
        return False
    return any(p.count("/") == 3 and p.rsplit("/", 1)[0] not in paths for p in paths)


def _authorise_predicates(session: Session, caller: Caller, query: QidoQuery) -> None:
    if query.level == "study":
        return
    above = sorted(
        {
            a.keyword
            for a in query.attributes_used()
            if qido.LEVEL_ORDER[a.level] <= 1 and a.vr != "UI"
        }
    )
    if query.include_all or query.include_tags:
        # Stored DICOM JSON mixes study-level elements into series and instance headers.
        above.append("includefield of stored attributes")
    if above and _series_only_grants(session, caller):
        raise PermissionDenied(
            f"you may not read {', '.join(above)} of every study whose series you can list: "
            "filter on series or instance attributes, or ask for list on the study"
        )


def _columns_for(query: QidoQuery, fields: Sequence[Attribute]) -> tuple[list[Any], list[str]]:
    """Selected columns (typed ones answered, plus stored JSON when includefield needs it)."""
    cols = [getattr(MODELS[a.level], a.column) for a in fields]
    json_levels: list[str] = []
    if query.include_all or query.include_tags:
        json_levels = [
            lv for lv in ("instance", "series", "study")
            if qido.LEVEL_ORDER[lv] <= qido.LEVEL_ORDER[query.level]
        ]  # fmt: skip
        cols += [MODELS[lv].attrs for lv in json_levels]
    return cols, json_levels


def _statement(caller: Caller, query: QidoQuery, columns: Sequence[Any]) -> Any:
    level = query.level
    study_dir = literal(ROOT + "/") + Study.study_uid
    stmt: Any = select(*columns)
    if level == "study":
        stmt = stmt.select_from(Study).join(Patient, Study.patient_fk == Patient.id)
        scope = access.scope_clause(caller, Right.LIST, study_dir)
        order: Any = Study.id
    else:
        series_dir = study_dir + literal("/") + Series.series_uid
        scope = access.scope_clause(caller, Right.LIST, study_dir, series_dir)
        if level == "series":
            stmt = stmt.select_from(Series)
            order = Series.id
        else:
            stmt = stmt.select_from(Instance).join(Series, Instance.series_fk == Series.id)
            order = Instance.id
        stmt = stmt.join(Study, Series.study_fk == Study.id).join(
            Patient, Study.patient_fk == Patient.id
        )
    conds = [c for c in (_condition(f) for f in query.filters) if c is not None]
    return stmt.where(scope, *conds).order_by(order)


@dataclass
class SearchResult:
    matches: list[dict[str, Any]]
    more: bool  # the server limit cut the answer: PS3.18 asks for a Warning
    warnings: list[str]


def search(
    session: Session, caller: Caller, query: QidoQuery, *, max_results: int = 1000
) -> SearchResult:
    """Run a parsed QIDO-RS query for *caller*; answers are DICOM JSON datasets.

    Only the columns the answer needs are selected, as plain rows (no ORM objects): the
    service's overhead over the bare SQL stays small (bench/catalog.py measures it).
    """
    _authorise_predicates(session, caller, query)
    limit = query.limit if query.limit is not None else max_results
    limit = min(limit, max_results)
    fields = _fields(query)
    columns, json_levels = _columns_for(query, fields)
    stmt = _statement(caller, query, columns).offset(query.offset).limit(limit + 1)
    rows = session.execute(stmt).all()
    more = len(rows) > limit and query.limit is None
    rows = rows[:limit]
    n = len(fields)
    # Fields are sorted by tag once, so answers come out in DICOM order without a sort per row.
    order = sorted(range(n), key=lambda i: fields[i].tag)
    spec = [(i, fields[i].tag, fields[i].vr) for i in order]
    matches = []
    for row in rows:
        out: dict[str, Any] = {}
        for i, tag, vr in spec:
            v = row[i]
            if v is None or v == "":
                out[tag] = {"vr": vr}
            elif vr == "PN":
                out[tag] = {"vr": vr, "Value": [{"Alphabetic": v}]}
            elif vr == "CS" and "\\" in v:
                out[tag] = {"vr": vr, "Value": v.split("\\")}
            else:
                out[tag] = {"vr": vr, "Value": [v]}
        if json_levels:
            _add_stored(out, query, [row[n + j] or {} for j in range(len(json_levels))])
            out = dict(sorted(out.items()))
        matches.append(out)
    warnings = list(query.warnings) + ([qido.MORE_WARNING] if more else [])
    return SearchResult(matches, more, warnings)


def _fields(query: QidoQuery) -> list[Attribute]:
    names = list(qido.DEFAULT_FIELDS[query.level])
    out = [qido.BY_KEYWORD[n] for n in names]
    extra = [f.attribute for f in query.filters] + list(query.include)
    if query.include_all:
        extra += [
            a for a in qido.ATTRIBUTES if qido.LEVEL_ORDER[a.level] <= qido.LEVEL_ORDER[query.level]
        ]
    for a in extra:
        if a not in out:
            out.append(a)
    return out


def element(vr: str, v: Any) -> dict[str, Any]:
    """A DICOM JSON element (PS3.18 F.2.2); no ``Value`` when the attribute is empty."""
    if v is None or v == "":
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": v}]}
    if vr == "CS" and isinstance(v, str) and "\\" in v:
        return {"vr": vr, "Value": v.split("\\")}
    return {"vr": vr, "Value": [v]}


def _add_stored(out: dict[str, Any], query: QidoQuery, stored: list[Mapping[str, Any]]) -> None:
    """includefield answered from stored DICOM JSON, most specific level first."""
    if query.include_all:
        for attrs in reversed(stored):
            out.update({t: e for t, e in attrs.items() if t not in out})
    for tag in query.include_tags:
        for attrs in stored:
            if tag in attrs:
                out[tag] = attrs[tag]
                break
