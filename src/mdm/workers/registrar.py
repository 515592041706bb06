"""Registration of a PACS's content as NEARLINE files: what ``mdm register`` runs.

The C-FIND walk (``mdm.dicom.walk``) yields every instance with its study and series
attributes. Each becomes, through the *same anonymizer the recall worker uses* (so that LFNs,
pseudonymous PatientID and the recalled files agree):

* a file ``/dicom/<pseudo study>/<pseudo series>/<pseudo instance>`` with two replica rows:
  this SE's (NEARLINE) and ``pacs:<NAME>`` (where the original lives, read by the worker);
* de-identified study/series/instance attributes in the metadata catalog;
* the original identifiers and UIDs in the identity vault.

Idempotent: an instance already registered is counted and left alone. One transaction per
study, so an interrupted run leaves whole studies and the next run completes the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from mdm.catalog import files, registration, vault
from mdm.catalog.access import Caller
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.models import ReplicaState
from mdm.dicom.anonymize import Anonymizer, IdentityRecord
from mdm.dicom.pacs import Pacs
from mdm.dicom.walk import WalkedInstance, WalkStats, walk
from mdm.settings import Settings
from mdm.workers.recall import pacs_replica


@dataclass
class RegisterSummary:
    created: int = 0
    existing: int = 0
    walk: WalkStats = field(default_factory=WalkStats)


def original_dataset(w: WalkedInstance) -> Dataset:
    """What C-FIND told about one instance, as a (header-only) dataset to anonymize."""
    ds = Dataset()
    st, se, inst = w.study, w.series, w.instance
    values = {
        "PatientID": st.patient_id,
        "PatientName": st.patient_name,
        "PatientBirthDate": st.patient_birth_date,
        "PatientSex": st.patient_sex,
        "StudyInstanceUID": st.study_uid,
        "StudyDate": st.study_date,
        "StudyTime": st.study_time,
        "AccessionNumber": st.accession_number,
        "StudyID": st.study_id,
        "StudyDescription": st.description,
        "ReferringPhysicianName": st.referring_physician,
        "SeriesInstanceUID": se.series_uid,
        "Modality": se.modality,
        "SeriesDescription": se.description,
        "SeriesDate": se.series_date,
        "SeriesTime": se.series_time,
        "BodyPartExamined": se.body_part,
        "SOPInstanceUID": inst.sop_instance_uid,
        "SOPClassUID": inst.sop_class_uid,
    }
    for keyword, value in values.items():
        if value:
            setattr(ds, keyword, value)
    if se.series_number is not None:
        ds.SeriesNumber = se.series_number
    if inst.instance_number is not None:
        ds.InstanceNumber = inst.instance_number
    return ds


class Registrar:
    """Registers walked instances of one PACS (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        dbs: CatalogDatabases,
        caller: Caller,
        anonymizer: Anonymizer,
        pacs: Pacs,
    ) -> None:
        self.dbs = dbs
        self.caller = caller
        self.anonymizer = anonymizer
        self.pacs = pacs
        self.se = settings.storage.name
        self.base_url = settings.storage.url.rstrip("/")

    @contextmanager
    def _sessions(self) -> Iterator[tuple[Session, Session]]:
        with self.dbs.catalog.session(write=True) as cs:
            if not self.dbs.separate_vault:
                yield cs, cs
                return
            with self.dbs.vault.session(write=True) as vs:
                yield cs, vs

    def register(self, walked: list[WalkedInstance]) -> tuple[int, int]:
        """Register one study's instances in one transaction; ``(created, existing)``."""
        created = existing = 0
        with self._sessions() as (cs, vs):
            regs: list[registration.Registration] = []
            lfns: list[str] = []
            for w in walked:
                anon = self.anonymizer.anonymize(original_dataset(w))
                i = anon.identity
                uids = (i.pseudo_study_instance_uid, i.pseudo_series_instance_uid)
                lfn = files.lfn(*uids, i.pseudo_sop_instance_uid)
                regs.append(self._registration(anon.dataset.to_json_dict(), i, lfn))
                lfns.append(lfn)
            source = pacs_replica(self.pacs.name)
            size = registration.MAX_BATCH
            for start in range(0, len(regs), size):
                # prefetches, counters once per batch: the HTTP batch registration's own path
                done = registration.register_many(cs, vs, self.caller, regs[start : start + size])
                for (entry, new), lfn in zip(done, lfns[start : start + size], strict=True):
                    url = f"pacs://{self.pacs.name}{lfn}"
                    if new:  # just made, with this SE's replica only: no lookup needed
                        files.first_replica(
                            cs, entry, se=source, url=url, state=ReplicaState.NEARLINE
                        )
                    elif not any(r.se == source for r in entry.replicas):
                        files.add_replica(
                            cs, self.caller, entry.path, se=source, url=url,
                            state=ReplicaState.NEARLINE,
                        )  # fmt: skip
                    created += new
                    existing += not new
        return created, existing

    def _registration(
        self, dataset: dict[str, Any], ident: IdentityRecord, lfn: str
    ) -> registration.Registration:
        """What the catalog records of one anonymized instance: the file with this SE's
        NEARLINE replica, the de-identified attributes, and the originals for the vault."""
        return registration.Registration(
            dataset=dataset,
            replica=registration.ReplicaSpec(
                self.se, f"{self.base_url}{lfn}", ReplicaState.NEARLINE
            ),
            original=vault.OriginalIdentity(
                patient_id=ident.patient_id,
                study_uid=ident.study_instance_uid,
                series_uid=ident.series_instance_uid,
                sop_uid=ident.sop_instance_uid,
                patient_name=ident.patient_name or None,
                patient_birth_date=ident.patient_birth_date or None,
                issuer_of_patient_id=ident.issuer_of_patient_id or None,
                accession_number=ident.accession_number or None,
            ),
        )

    def run(
        self,
        *,
        study_uid: str | None = None,
        patient_id: str | None = None,
        since: dt.date | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RegisterSummary:
        summary = RegisterSummary()
        batch: list[WalkedInstance] = []

        def flush() -> None:
            created, existing = self.register(batch)
            summary.created += created
            summary.existing += existing
            if progress is not None:
                progress(len(batch))
            batch.clear()

        for w in walk(
            self.pacs, study_uid=study_uid, patient_id=patient_id, since=since, stats=summary.walk
        ):
            if batch and batch[0].study_uid != w.study_uid:
                flush()
            batch.append(w)
        if batch:
            flush()
        return summary
