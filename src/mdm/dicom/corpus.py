"""A synthetic multi-patient CT/MR corpus: realistic identity, realistic sizes, no real patient.

Tests, benchmarks and ``mdm demo`` need DICOM that looks like a hospital's: several patients,
studies and series, the identifying attributes an anonymizer must handle (names, birth dates,
addresses, other IDs, physicians, institution, device serial numbers, accession numbers,
dates and times), and pixel data of a realistic size (a 512 x 512 CT slice is ~0.5 MB). All of
it is deterministic from ``seed``: the same spec gives the same UIDs and the same bytes, so a
benchmark can be rerun and a test can name what it expects.

UIDs are ``2.25.`` UIDs of name-based UUIDs computed from the seed and the position in the
corpus. Pixel data is a body phantom (an ellipse
whose size varies along the series) plus seeded noise in the low bits, built with integer
arithmetic on whole rows, so generating a 0.5 MB slice costs about a millisecond and needs no
numpy.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
_FAMILY = ("Dupont", "Martin", "Bernard", "Moreau", "Lefebvre", "Garcia", "Rossi", "Novak")
_GIVEN = ("Marie", "Jean", "Camille", "Louis", "Ines", "Hugo", "Lea", "Nathan", "Chloe")
_STREETS = ("rue des Lilas", "avenue Jean Jaures", "boulevard Carnot", "chemin du Moulin")
_CITIES = ("Lyon", "Villeurbanne", "Grenoble", "Clermont-Ferrand", "Saint-Etienne")
_PHYSICIANS = ("Durand^Paul^^Dr", "Petit^Sophie^^Dr", "Roux^Antoine^^Pr", "Fournier^Claire^^Dr")
_BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "PELVIS")


@dataclass(frozen=True)
class CorpusSpec:
    """Shape of a corpus. The defaults make the small test corpus (60 instances of 8 KB)."""

    patients: int = 3
    studies_per_patient: int = 2
    series_per_study: int = 2
    instances_per_series: int = 5
    rows: int = 64
    columns: int = 64
    #: Modality of each series, cycled: ("CT", "MR") alternates CT and MR series.
    modalities: tuple[str, ...] = ("CT", "MR")
    seed: int = 0

    @classmethod
    def ct_bench(cls, instances: int = 1080, seed: int = 0) -> CorpusSpec:
        """CT only, 512 x 512, ~0.5 MB per instance, 90 instances per study (3 series of 30)."""
        per_study = 90
        studies = max(1, -(-instances // per_study))
        return cls(
            patients=studies,
            studies_per_patient=1,
            series_per_study=3,
            instances_per_series=30,
            rows=512,
            columns=512,
            modalities=("CT",),
            seed=seed,
        )

    @property
    def total(self) -> int:
        return (
            self.patients
            * self.studies_per_patient
            * self.series_per_study
            * self.instances_per_series
        )


@dataclass(frozen=True)
class CorpusInstance:
    """Where one generated instance sits in the corpus (the manifest row)."""

    path: str  # relative: PATIENT/STUDY/SERIES/NNNN.dcm
    patient_id: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str


def _uid(spec: CorpusSpec, *where: object) -> str:
    # A name-based UUID (RFC 4122 version 5) in the 2.25 arc (PS3.5 B.2): deterministic.
    name = "/".join(map(str, ("mdm-corpus", spec.seed, *where)))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _rng(spec: CorpusSpec, *where: object) -> random.Random:
    # Reproducible synthetic data, not secrecy: a seeded PRNG is exactly what is wanted.
    return random.Random("-".join(map(str, (spec.seed, *where))))  # noqa: S311


@functools.lru_cache(maxsize=64)
def _phantom(rows: int, columns: int, variant: int, modality: str) -> int:
    """The noiseless image as one little-endian integer (low 4 bits of every pixel zero)."""
    air, body, edge = (0, 1056, 1776) if modality == "CT" else (0, 608, 1200)
    cy, cx = rows / 2, columns / 2
    ry = rows * (0.30 + 0.02 * (variant % 5))
    rx = columns * (0.42 + 0.01 * (variant % 7))
    out = bytearray()
    for y in range(rows):
        t = 1 - ((y - cy) / ry) ** 2
        half = int(rx * t**0.5) if t > 0 else 0
        x0, x1 = max(0, int(cx) - half), min(columns, int(cx) + half)
        inner = max(0, x1 - x0 - 4)
        row = air.to_bytes(2, "little") * x0
        if x1 > x0:
            ring = edge.to_bytes(2, "little") * min(2, x1 - x0)
            row += ring + body.to_bytes(2, "little") * inner + ring
        out += row + air.to_bytes(2, "little") * (columns - len(row) // 2)
    return int.from_bytes(bytes(out[: rows * columns * 2]), "little")


def _pixels(spec: CorpusSpec, rng: random.Random, variant: int, modality: str) -> bytes:
    size = spec.rows * spec.columns * 2
    mask = int.from_bytes(b"\x0f\x00" * (spec.rows * spec.columns), "little")
    noise = int.from_bytes(rng.randbytes(size), "little") & mask
    return (_phantom(spec.rows, spec.columns, variant, modality) | noise).to_bytes(size, "little")


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FAMILY).upper()}^{rng.choice(_GIVEN)}"


def generate(spec: CorpusSpec) -> Iterator[tuple[CorpusInstance, Dataset]]:
    """Yield (manifest row, dataset with file meta) for every instance, in corpus order."""
    base = dt.date(2019, 1, 1)
    for p in range(spec.patients):
        prng = _rng(spec, "patient", p)
        patient_id = f"MDM{spec.seed:02d}{p:05d}"
        patient = {
            "PatientName": _name(prng),
            "PatientID": patient_id,
            "IssuerOfPatientID": "HOSPITAL-A",
            "PatientBirthDate": (
                dt.date(1940, 1, 1) + dt.timedelta(prng.randrange(25000))
            ).strftime("%Y%m%d"),
            "PatientSex": prng.choice("MF"),
            "PatientAddress": f"{prng.randrange(1, 200)} {prng.choice(_STREETS)}, "
            f"{prng.choice(_CITIES)}",
            "PatientTelephoneNumbers": f"+33 4 {prng.randrange(10**7, 10**8)}",
        }
        other = Dataset()
        other.PatientID = f"OTH{prng.randrange(10**6):06d}"
        other.IssuerOfPatientID = "HOSPITAL-B"
        other.TypeOfPatientID = "TEXT"
        for s in range(spec.studies_per_patient):
            srng = _rng(spec, "study", p, s)
            study_uid = _uid(spec, "study", p, s)
            date = base + dt.timedelta(days=srng.randrange(0, 5 * 365))
            time = f"{srng.randrange(7, 19):02d}{srng.randrange(60):02d}{srng.randrange(60):02d}"
            study = {
                "StudyInstanceUID": study_uid,
                "StudyDate": date.strftime("%Y%m%d"),
                "StudyTime": time,
                "AccessionNumber": f"ACC{srng.randrange(10**8):08d}",
                "StudyID": f"S{s + 1}",
                "StudyDescription": f"Synthetic exam {s + 1}",
                "ReferringPhysicianName": srng.choice(_PHYSICIANS),
                "InstitutionName": "Hopital Synthetique",
                "InstitutionAddress": "1 place de l'Hopital, Lyon",
                "PatientAge": f"{(date.year - int(patient['PatientBirthDate'][:4])):03d}Y",
            }
            frame_uid = _uid(spec, "frame", p, s)
            for r in range(spec.series_per_study):
                modality = spec.modalities[(s * spec.series_per_study + r) % len(spec.modalities)]
                series_uid = _uid(spec, "series", p, s, r)
                body_part = _BODY_PARTS[(p + s + r) % len(_BODY_PARTS)]
                for i in range(spec.instances_per_series):
                    irng = _rng(spec, "instance", p, s, r, i)
                    sop_uid = _uid(spec, "instance", p, s, r, i)
                    ds = _instance(spec, modality, irng, i)
                    for key, value in {**patient, **study}.items():
                        setattr(ds, key, value)
                    ds.OtherPatientIDsSequence = Sequence([_copy(other)])
                    ds.SOPInstanceUID = sop_uid
                    ds.SeriesInstanceUID = series_uid
                    ds.FrameOfReferenceUID = frame_uid
                    ds.SeriesNumber = r + 1
                    ds.SeriesDescription = f"{modality} {body_part.lower()} {r + 1}"
                    # A sequence the profile keeps, as real instances have many: how a
                    # receiver encodes its lengths must not change the anonymized bytes.
                    ds.AnatomicRegionSequence = Sequence([_region(body_part)])
                    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = ds.StudyDate
                    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = time
                    ds.BodyPartExamined = body_part
                    ds.PerformingPhysicianName = _PHYSICIANS[(p + r) % len(_PHYSICIANS)]
                    ds.OperatorsName = _name(irng)
                    ds.StationName = f"{modality}SCANNER{(p + s) % 3 + 1}"
                    ds.DeviceSerialNumber = f"SN-{modality}-{(p + s) % 3 + 1:04d}"
                    _meta(ds)
                    row = CorpusInstance(
                        path=f"{patient_id}/ST{s}/SE{r}/{i:04d}.dcm",
                        patient_id=patient_id,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        sop_instance_uid=sop_uid,
                        sop_class_uid=str(ds.SOPClassUID),
                        modality=modality,
                    )
                    yield row, ds


#: SNOMED CT codes of the body parts (CID 4031).
_REGION_CODES = {"CHEST": "51185008", "ABDOMEN": "818981001", "HEAD": "69536005",
                 "PELVIS": "816092008"}  # fmt: skip


def _region(body_part: str) -> Dataset:
    item = Dataset()
    item.CodeValue = _REGION_CODES[body_part]
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = body_part.title()
    return item


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    out.update(ds)
    return out


def _instance(spec: CorpusSpec, modality: str, rng: random.Random, index: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.Modality = modality
    ds.Manufacturer = "MDM Synthetic"
    ds.ManufacturerModelName = f"Phantom {modality}"
    ds.SoftwareVersions = "1.0"
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.SliceThickness = "2.5"
    ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-index * 2.5:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{-index * 2.5:.1f}"
    ds.PixelSpacing = [f"{500 / spec.rows:.4f}", f"{500 / spec.columns:.4f}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.KVP = "120"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = "1"
        ds.MagneticFieldStrength = "1.5"
    ds.PixelData = _pixels(spec, rng, index, modality)
    return ds


def _meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MDM_CORPUS_1"
    ds.file_meta = meta


def to_bytes(ds: Dataset) -> bytes:
    """The Part 10 file of *ds* (preamble, file meta, Explicit VR Little Endian)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write(spec: CorpusSpec, directory: Path) -> list[CorpusInstance]:
    """Write the corpus under *directory* (plus ``manifest.csv``); returns the manifest."""
    rows: list[CorpusInstance] = []
    for row, ds in generate(spec):
        path = directory / row.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_bytes(ds))
        rows.append(row)
    with (directory / "manifest.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(CorpusInstance.__dataclass_fields__)
        for row in rows:
            out.writerow([getattr(row, name) for name in CorpusInstance.__dataclass_fields__])
    return rows
