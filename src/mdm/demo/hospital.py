"""A synthetic hospital: generated, loaded into the grid's PACS, registered in the catalog.

The images come from ``mdm.dicom.corpus`` (several patients, studies and series, CT and MR,
with the identifying attributes an anonymizer must handle: names, birth dates, addresses,
telephone numbers, other patient IDs, physicians, operators, institution, accession numbers,
device serial numbers, original UIDs). ``Hospital.identifying`` keeps every such value, so the
story can check that none of them survives in what a researcher decrypts.

Registration is what ``mdm register`` does (``mdm.workers.registrar``): a C-FIND walk of the
PACS, the same anonymizer as the recall worker, NEARLINE files in the catalog, de-identified
metadata, originals in the identity vault.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from mdm.demo.grid import Grid, PartMissing
from mdm.dicom.corpus import CorpusInstance, CorpusSpec, generate, to_bytes

#: Attributes whose values identify a patient or the hospital's staff (PS3.15 Annex E).
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "DeviceSerialNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)
#: The demo hospital: 3 patients x 2 studies x 2 series x 4 images of 128 x 128 (~33 KB).
#: Series modalities cycle CT, CT, MR: each patient has a CT-only study and a CT+MR study.
SPEC = CorpusSpec(
    patients=3,
    studies_per_patient=2,
    series_per_study=2,
    instances_per_series=4,
    rows=128,
    columns=128,
    modalities=("CT", "CT", "MR"),
    seed=7,
)


@dataclass
class Hospital:
    spec: CorpusSpec = SPEC
    rows: list[CorpusInstance] = field(default_factory=list)
    #: Every identifying string value of the source (names, IDs, dates of birth, UIDs...).
    identifying: set[str] = field(default_factory=set)
    #: Original study UID -> (PatientID, PatientName) as the PACS holds them.
    patients_of_study: dict[str, tuple[str, str]] = field(default_factory=dict)
    modalities_of_study: dict[str, set[str]] = field(default_factory=dict)
    bytes_loaded: int = 0

    def files(self) -> Iterator[bytes]:
        """Generate the Part 10 files, recording what identifies each patient."""
        for row, ds in generate(self.spec):
            self._remember(row, ds)
            data = to_bytes(ds)
            self.bytes_loaded += len(data)
            self.rows.append(row)
            yield data

    def _remember(self, row: CorpusInstance, ds: Dataset) -> None:
        for name in IDENTIFYING:
            value = ds.get(name)
            if value not in (None, ""):
                text = str(value)
                self.identifying.add(text)
                if name == "PatientName":  # components appear on their own too
                    self.identifying.update(p for p in text.split("^") if len(p) > 2)
        for item in ds.get("OtherPatientIDsSequence", []):
            self.identifying.add(str(item.PatientID))
        self.patients_of_study[row.study_uid] = (str(ds.PatientID), str(ds.PatientName))
        self.modalities_of_study.setdefault(row.study_uid, set()).add(row.modality)

    def load(self, grid: Grid) -> int:
        """Store the hospital in the grid's PACS; returns the number of instances."""
        if grid.pacs is None:
            raise PartMissing("the grid has no PACS")
        return grid.pacs.load(self.files())

    def register(self, grid: Grid) -> dict[str, Any]:
        """``mdm register --pacs hospital`` in-process: NEARLINE files, metadata, vault."""
        if importlib.util.find_spec("mdm.workers.registrar") is None:
            raise PartMissing("mdm.workers.registrar is not part of this installation yet")
        if "storage" in grid.missing:
            raise PartMissing("registration names the SE's replicas, and the SE is missing")
        from mdm.catalog.db import CatalogDatabases
        from mdm.dicom.pacs import Pacs
        from mdm.workers.recall import anonymizer_from, service_caller
        from mdm.workers.registrar import Registrar

        settings = grid.settings_for("worker", server=True)
        cat = settings.catalog
        dbs = CatalogDatabases.from_settings(cat)
        try:
            registrar = Registrar(
                settings,
                dbs,
                service_caller(settings),
                anonymizer_from(settings),
                Pacs.from_settings(settings, "hospital"),
            )
            summary = registrar.run()
        finally:
            dbs.dispose()
        return {"created": summary.created, "existing": summary.existing}


__all__ = ["IDENTIFYING", "SPEC", "Hospital"]
