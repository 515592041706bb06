"""The identity vault: original identifiers and the pseudonym map, level 3 of MDM's access.

The vault's tables (``VaultBase``) may live in their own database (``vault_database_url``),
while the rights that guard them are the catalog's directory ACLs: every function here takes a
``check(path, right) -> bool`` evaluated on the catalog session by the caller of the function
(the server), so the vault never needs to reach the catalog database itself.

- Reading a patient's identity needs the ``identity`` right on the study, states a reason, and is
  written to the hash-chained audit log in the same transaction as the read (no read without its
  record). Denied attempts are recorded with ``audit_denial`` in a transaction of their own.
- Service identities (recall workers) may resolve pseudonymous UIDs to original UIDs, which they
  need to retrieve from the PACS; that too is audited, but gives no patient identity.
- Registration is idempotent, and refuses to remap a pseudonym to another original
  (``Conflict``): a pseudonym collision or a poisoning attempt must not pass silently.

Audit records name pseudonymous UIDs only; the value a lookup searched for is never recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mdm.catalog import audit
from mdm.catalog.access import ROOT, Caller, chunks
from mdm.catalog.models import Right, UidMap, VaultPatient, VaultStudy
from mdm.errors import Conflict, NotFound, PermissionDenied, UsageError

Check = Callable[[str, Right], bool]


@dataclass(frozen=True)
class OriginalIdentity:
    """What the PACS knows, before de-identification. Never logged."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_name: str | None = None
    patient_birth_date: str | None = None
    issuer_of_patient_id: str | None = None
    accession_number: str | None = None


@dataclass(frozen=True)
class Pseudonyms:
    """The catalog-side names of the same instance (what the LFN and QIDO show)."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    accession_number: str | None = None


def _study_dir(pseudo_study_uid: str) -> str:
    return f"{ROOT}/{pseudo_study_uid}"


#: ``session.info`` key: vault rows this transaction has read or written, by ``(model, key)``,
#: ``None`` for a pseudonym ``prefetch`` found unmapped. Strong references: the session's
#: identity map is weak, so without them every instance of a study read its patient, study
#: and series rows again.
_KNOWN = "mdm.vault.known"


def _get(session: Session, model: Any, key: str) -> Any:
    known: dict[tuple[Any, str], Any] = session.info.setdefault(_KNOWN, {})
    if (model, key) not in known:
        known[model, key] = session.get(model, key)
    return known[model, key]


def _add(session: Session, key: str, row: Any) -> None:
    session.add(row)
    session.info.setdefault(_KNOWN, {})[type(row), key] = row


def prefetch(session: Session, pseudo_uids: Sequence[str]) -> None:
    """Read the mappings of many pseudonymous UIDs at once, before registering them (one study
    of a PACS walk): ``register_identity`` then finds each mapping, or knows it absent, without
    a query per instance. For this transaction only; a mapping another transaction adds
    meanwhile still fails the insert (unique key), as without the prefetch."""
    known: dict[tuple[Any, str], Any] = session.info.setdefault(_KNOWN, {})
    for chunk in chunks(sorted(set(pseudo_uids))):
        rows = {
            r.pseudo_uid: r
            for r in session.scalars(select(UidMap).where(UidMap.pseudo_uid.in_(chunk)))
        }
        known.update(((UidMap, uid), rows.get(uid)) for uid in chunk)


def _map(session: Session, pseudo: str, original: str, level: str, study: str) -> None:
    found = _get(session, UidMap, pseudo)
    if found is None:
        # An original already mapped to another pseudonym violates the unique constraint on
        # original_uid at flush: the registration fails as AlreadyExists (409), like a Conflict.
        _add(
            session,
            pseudo,
            UidMap(pseudo_uid=pseudo, original_uid=original, level=level, pseudo_study_uid=study),
        )
    elif found.original_uid != original:
        raise Conflict(
            f"pseudonymous {level} UID {pseudo} is mapped to another original", uid=pseudo
        )


def register_identity(
    session: Session, caller: Caller, check: Check, pseudo: Pseudonyms, original: OriginalIdentity
) -> None:
    """Record the originals of one instance (needs ``write`` on its study); idempotent."""
    if not check(f"{_study_dir(pseudo.study_uid)}/{pseudo.series_uid}", Right.WRITE):
        raise PermissionDenied("write right needed to register identities", study=pseudo.study_uid)
    patient = _get(session, VaultPatient, pseudo.patient_id)
    if patient is None:
        _add(
            session,
            pseudo.patient_id,
            VaultPatient(
                pseudo_patient_id=pseudo.patient_id,
                patient_id=original.patient_id,
                patient_name=original.patient_name,
                patient_birth_date=original.patient_birth_date,
                issuer_of_patient_id=original.issuer_of_patient_id,
            ),
        )
        session.flush()
    elif patient.patient_id != original.patient_id:
        raise Conflict(
            "pseudonymous PatientID is mapped to another patient", patient=pseudo.patient_id
        )
    study = _get(session, VaultStudy, pseudo.study_uid)
    if study is None:
        _map(session, pseudo.study_uid, original.study_uid, "study", pseudo.study_uid)
        _add(
            session,
            pseudo.study_uid,
            VaultStudy(
                pseudo_study_uid=pseudo.study_uid,
                study_uid=original.study_uid,
                pseudo_patient_id=pseudo.patient_id,
                accession_number=original.accession_number,
                pseudo_accession_number=pseudo.accession_number,
            ),
        )
    elif study.study_uid != original.study_uid or study.pseudo_patient_id != pseudo.patient_id:
        raise Conflict(f"pseudonymous study {pseudo.study_uid} is mapped to another original")
    _map(session, pseudo.series_uid, original.series_uid, "series", pseudo.study_uid)
    _map(session, pseudo.sop_uid, original.sop_uid, "instance", pseudo.study_uid)
    session.flush()


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise UsageError("identity lookups need a reason (it is written to the audit log)")
    return reason[:500]


def study_identity(
    session: Session, caller: Caller, check: Check, pseudo_study_uid: str, *, reason: str
) -> dict[str, Any]:
    """Original identity behind a pseudonymous study (``identity`` right), audited."""
    why = _reason(reason)
    if not check(_study_dir(pseudo_study_uid), Right.IDENTITY):
        raise PermissionDenied(f"identity right needed on study {pseudo_study_uid}")
    study = session.get(VaultStudy, pseudo_study_uid)
    if study is None:
        raise NotFound(f"no identity recorded for study {pseudo_study_uid}")
    patient = session.get(VaultPatient, study.pseudo_patient_id)
    if patient is None:  # the foreign key forbids it; a hand-edited vault could not
        raise NotFound(f"vault has no patient for study {pseudo_study_uid}")
    audit.append(
        session, actor=caller.name, action="identity.study", target=pseudo_study_uid,
        detail={"reason": why},
    )  # fmt: skip
    return {
        "StudyInstanceUID": pseudo_study_uid,
        "PatientID": study.pseudo_patient_id,
        "original": {
            "PatientID": patient.patient_id,
            "PatientName": patient.patient_name,
            "PatientBirthDate": patient.patient_birth_date,
            "IssuerOfPatientID": patient.issuer_of_patient_id,
            "AccessionNumber": study.accession_number,
            "StudyInstanceUID": study.study_uid,
        },
    }


def find_studies(
    session: Session,
    caller: Caller,
    check: Check,
    *,
    patient_id: str | None = None,
    accession_number: str | None = None,
    reason: str,
) -> list[dict[str, str]]:
    """Pseudonymous studies of an original PatientID or AccessionNumber, audited.

    Only studies on which the caller holds ``identity`` are answered; the others are not
    distinguishable from studies that do not exist.
    """
    why = _reason(reason)
    if not patient_id and not accession_number:
        raise UsageError("give an original PatientID or AccessionNumber")
    stmt = select(VaultStudy)
    if patient_id:
        stmt = stmt.join(VaultPatient).where(VaultPatient.patient_id == patient_id)
    if accession_number:
        stmt = stmt.where(VaultStudy.accession_number == accession_number)
    found = [
        {"StudyInstanceUID": s.pseudo_study_uid, "PatientID": s.pseudo_patient_id}
        for s in session.scalars(stmt.order_by(VaultStudy.pseudo_study_uid))
        if check(_study_dir(s.pseudo_study_uid), Right.IDENTITY)
    ]
    by = "PatientID" if patient_id else "AccessionNumber"
    target = ",".join(f["StudyInstanceUID"] for f in found) or "-"
    audit.append(
        session, actor=caller.name, action="identity.find", target=target,
        detail={"reason": why, "by": by, "matches": len(found)},
    )  # fmt: skip
    return found


def original_uids(
    session: Session,
    caller: Caller,
    check: Check,
    pseudo_uids: Sequence[str],
    *,
    reason: str = "recall",
) -> dict[str, str]:
    """Pseudonymous -> original UIDs, for service identities or holders of ``identity``."""
    rows = list(session.scalars(select(UidMap).where(UidMap.pseudo_uid.in_(list(pseudo_uids)))))
    missing = sorted(set(pseudo_uids) - {r.pseudo_uid for r in rows})
    if missing:
        raise NotFound(f"no original UID recorded for {missing[0]}", uid=missing[0])
    for study in sorted({r.pseudo_study_uid for r in rows}):
        if not (caller.service or caller.admin or check(_study_dir(study), Right.IDENTITY)):
            raise PermissionDenied(f"service identity or identity right needed on study {study}")
    audit.append(
        session, actor=caller.name, action="identity.uids",
        target=",".join(sorted({r.pseudo_study_uid for r in rows})),
        detail={"reason": reason[:500], "count": len(rows)},
    )  # fmt: skip
    return {r.pseudo_uid: r.original_uid for r in rows}


def audit_denial(session: Session, caller: Caller, action: str, target: str) -> None:
    """Record a refused identity request (in its own transaction: the refusal rolls back)."""
    audit.append(session, actor=caller.name, action=action, target=target, outcome="denied")
