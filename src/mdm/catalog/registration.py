"""Registering one instance: file catalog + metadata catalog + identity vault, in that spirit.

``Registration.from_json`` reads the wire form (``POST /files`` of the catalog service)::

    {"dataset":  {DICOM JSON of the de-identified header, pseudonymous UIDs and PatientID},
     "file":     {"size": .., "adler32": .., "sha256": .., "key_id": ..},      (optional)
     "replica":  {"se": .., "url": .., "state": "NEARLINE", ...},               (optional)
     "original": {"PatientID": .., "PatientName": .., "PatientBirthDate": ..,
                  "IssuerOfPatientID": .., "AccessionNumber": ..,
                  "StudyInstanceUID": .., "SeriesInstanceUID": .., "SOPInstanceUID": ..}}

``register`` writes the vault first, then the catalog: a crash in between leaves only a vault
row that the retry finds again (idempotent), never a visible file whose identity is missing.
Registering the same pseudonymous SOP Instance UID again changes nothing, not even replicas.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from mdm.catalog import access, files, metadata, vault
from mdm.catalog.access import Caller
from mdm.catalog.files import FileInfo
from mdm.catalog.models import Entry, Replica, ReplicaState
from mdm.errors import UsageError

#: What the columns hold (``Replica.se``, ``Entry.key_id``; ``size`` is a signed 64-bit
#: integer): checked here, for every caller, so a longer value is a 400, not a driver error.
MAX_SE: int = Replica.__table__.c.se.type.length  # type: ignore[attr-defined]
MAX_KEY_ID: int = Entry.__table__.c.key_id.type.length  # type: ignore[attr-defined]
MAX_SIZE = 2**63 - 1


@dataclass(frozen=True)
class ReplicaSpec:
    se: str
    url: str
    state: ReplicaState = ReplicaState.NEARLINE
    pinned_until: dt.datetime | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplicaSpec:
        try:
            pinned = data.get("pinned_until")
            until = dt.datetime.fromisoformat(pinned) if pinned else None
            reason = data.get("reason")
            spec = cls(
                se=_text(data["se"], "se"),
                url=_text(data["url"], "url"),
                state=ReplicaState(str(data.get("state", "NEARLINE")).upper()),
                pinned_until=until,
                reason=None if reason is None else _text(reason, "reason"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"bad replica: {exc}") from exc
        if until is not None and until.utcoffset() is None:
            # A naive time would fail in the database (as a 500) or be read in local time.
            raise UsageError(
                "bad replica: pinned_until needs a UTC offset (e.g. +00:00)", field="pinned_until"
            )
        if not spec.se or len(spec.se) > MAX_SE:
            raise UsageError(f"bad replica: 'se' must be 1 to {MAX_SE} characters", field="se")
        return spec


def _text(value: Any, name: str) -> str:
    """A JSON string, refused (not converted) when it is anything else."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def file_info(data: Mapping[str, Any] | None) -> FileInfo:
    """Size, checksums and key id of a registration (all optional); wrong JSON types are
    refused here, for every caller, not only behind the HTTP layer."""
    data = data or {}
    size = data.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise UsageError("file size must be an integer", field="size")
    if size is not None and not 0 <= size <= MAX_SIZE:
        raise UsageError(f"file size must be between 0 and {MAX_SIZE}", field="size")
    fields = {name: data.get(name) for name in ("adler32", "sha256", "key_id")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise UsageError(f"file {name} must be a string", field=name)
    key_id = fields["key_id"]
    if key_id is not None and len(key_id) > MAX_KEY_ID:
        raise UsageError(f"key_id is over {MAX_KEY_ID} characters", field="key_id")
    return FileInfo(size, fields["adler32"], fields["sha256"], fields["key_id"])


@dataclass(frozen=True)
class Registration:
    dataset: Mapping[str, Any]
    file: FileInfo = field(default_factory=FileInfo)
    replica: ReplicaSpec | None = None
    original: vault.OriginalIdentity | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Registration:
        dataset = body.get("dataset")
        if not isinstance(dataset, Mapping):
            raise UsageError(
                "registration needs 'dataset' (DICOM JSON of the de-identified header)"
            )
        original = None
        if body.get("original") is not None:
            o = body["original"]
            try:
                original = vault.OriginalIdentity(
                    patient_id=str(o["PatientID"]),
                    study_uid=str(o["StudyInstanceUID"]),
                    series_uid=str(o["SeriesInstanceUID"]),
                    sop_uid=str(o["SOPInstanceUID"]),
                    patient_name=o.get("PatientName"),
                    patient_birth_date=o.get("PatientBirthDate"),
                    issuer_of_patient_id=o.get("IssuerOfPatientID"),
                    accession_number=o.get("AccessionNumber"),
                )
            except (KeyError, TypeError) as exc:
                raise UsageError(f"'original' lacks {exc}") from exc
        replica = ReplicaSpec.from_json(body["replica"]) if body.get("replica") else None
        return cls(dataset, file_info(body.get("file")), replica, original)

    def pseudonyms(self) -> vault.Pseudonyms:
        d = self.dataset
        uids = [metadata.value(d, t) for t in ("00100020", "0020000D", "0020000E", "00080018")]
        if not all(uids):
            raise UsageError("dataset needs PatientID and the study, series and SOP instance UIDs")
        acc = metadata.value(d, "00080050")
        patient, study, series, sop = (str(u) for u in uids)
        return vault.Pseudonyms(patient, study, series, sop, accession_number=acc)


def register(
    catalog: Session,
    vault_session: Session,
    caller: Caller,
    reg: Registration,
    *,
    defer_counts: bool = False,
) -> tuple[Entry, bool]:
    """Register one instance; ``(entry, created)``. Both sessions may be the same object.

    With *defer_counts* the study and series counters are only accumulated in the session:
    call ``metadata.flush_counts`` before the transaction ends (a batch updates them once)."""
    if reg.original is not None:
        vault.register_identity(
            vault_session,
            caller,
            lambda path, right: access.has_right(catalog, caller, path, right),
            reg.pseudonyms(),
            reg.original,
        )
    entry, created = metadata.register_instance(
        catalog, caller, reg.dataset, reg.file, defer_counts=defer_counts
    )
    if created and reg.replica is not None:
        r = reg.replica
        files.first_replica(
            catalog, entry, se=r.se, url=r.url, state=r.state,
            pinned_until=r.pinned_until, reason=r.reason, info=reg.file,
        )  # fmt: skip
    return entry, created


MAX_BATCH = 1000


def register_many(
    catalog: Session, vault_session: Session, caller: Caller, regs: list[Registration]
) -> list[tuple[Entry, bool]]:
    """Register several instances in one transaction (a series from a PACS walk or a recall).

    All or nothing: one refused or conflicting instance fails the batch. Directories, patient,
    study and series are looked up once per batch, which is where the speed comes from.
    """
    if len(regs) > MAX_BATCH:
        raise UsageError(f"at most {MAX_BATCH} registrations per batch")
    vault.prefetch(vault_session, [u for reg in regs for u in _mapped_uids(reg)])
    files.prefetch(catalog, [p for p in map(_lfn, regs) if p])
    done = [register(catalog, vault_session, caller, reg, defer_counts=True) for reg in regs]
    metadata.flush_counts(catalog)
    return done


def _lfn(reg: Registration) -> str:
    """The LFN *reg* registers ("" when its dataset lacks a UID: ``register`` refuses it)."""
    uids = [metadata.value(reg.dataset, t) for t in ("0020000D", "0020000E", "00080018")]
    try:
        return files.lfn(*(str(u) for u in uids)) if all(uids) else ""
    except UsageError:
        return ""


def _mapped_uids(reg: Registration) -> tuple[str, ...]:
    """The series and instance pseudonyms *reg* maps in the vault (none if it maps nothing, or
    if its dataset lacks them: ``register`` then refuses it, in its turn)."""
    if reg.original is None:
        return ()
    try:
        p = reg.pseudonyms()
    except UsageError:
        return ()
    return (p.series_uid, p.sop_uid)
