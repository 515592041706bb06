"""A synthetic DICOM corpus with planted PHI, and its manifest, to prove an anonymizer leak-free.

``generate(out_dir, ...)`` writes patients x studies x series x instances CT files. Each file
carries a unique, searchable value in *every* Table E.1-1 attribute whose VR can hold one (text,
names, dates, times, numbers as strings, UIDs, bytes; 4-byte binary numbers and Age Strings are
left out), in private elements with and without a private creator (and a private sequence),
inside the items of every sequence attribute (at depth 2 too), in overlays and curves, in the
file meta (AE titles, private information) and in the 128-byte preamble. Patient-level values
(group 0010) are the same for every file of a patient, so pseudonym consistency can be checked.
References are real: each image's Referenced Image Sequence points at the previous image of its
series and Source Image Sequence at the first, and a series shares its Frame of Reference UID.

``ct_like(...)`` builds a realistic CT header instead (about 100 attributes, PHI only where a
scanner puts it) for throughput measurements (bench/anonymize.py).

The manifest lists, per file, the planted tokens and the original UIDs; ``leaks(data, tokens)``
finds which tokens survive in bytes. Text markers all look like ``PHI<digits>``; dates are
unique days of 1931-1949, times carry a unique fraction, numbers are unique 9-digit strings and
UIDs live under ``ROOT``. Deterministic for a given ``seed``; the PACS engineer may reuse it.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from mdm.dicom.anonymize import _table_e1_1 as table

ROOT = "1.2.826.0.1.3680043.9.7134."
_COMBINED = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U"}
_SKIP_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "AT", "OD", "OF", "OL", "OV", "UV", "SV", "AS"}
_TAG = re.compile(r"^\([0-9A-F]{4},[0-9A-F]{4}\)$")
_PSEUDO_UID = re.compile(rb"2\.25\.\d+")
_TEXT = re.compile(rb"PHI\d{7}")


@dataclass
class CorpusFile:
    path: Path
    patient: int
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_of_reference_uid: str
    references: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    burned_in: bool = False


@dataclass
class Manifest:
    files: list[CorpusFile]

    def tokens(self) -> set[str]:
        return set().union(*(f.tokens for f in self.files))

    def uids(self) -> set[str]:
        return set().union(*(f.uids for f in self.files))

    def by_sop(self) -> dict[str, CorpusFile]:
        return {f.sop_uid: f for f in self.files}


class _Markers:
    """Unique planted values by VR; *base* keeps patient-level and file-level ranges apart."""

    def __init__(self, seed: int, base: int = 0, first_day: dt.date = dt.date(1931, 1, 1)):
        self.seed = seed
        self.base = base
        self.k = 0
        self.first_day = first_day

    def _next(self) -> int:
        self.k += 1
        return self.base + self.k

    def text(self, sink: set[str]) -> str:
        value = f"PHI{self._next():07d}"
        sink.add(value)
        return value

    def date(self, sink: set[str]) -> str:
        value = (self.first_day + dt.timedelta(days=self._next() - self.base)).strftime("%Y%m%d")
        sink.add(value)
        return value

    def time(self, sink: set[str]) -> str:
        value = f"101010.{self._next() % 1_000_000:06d}"
        sink.add(value)
        return value

    def number(self, sink: set[str]) -> str:
        value = str(900_000_000 + self._next())
        sink.add(value)
        return value

    def uid(self, sink: set[str]) -> str:
        value = f"{ROOT}{self.seed}.{self._next()}"
        sink.add(value)
        return value


def _patient_markers(seed: int, p: int) -> _Markers:
    return _Markers(seed, 8_000_000 + p * 10_000, dt.date(1950, 1, 1) + dt.timedelta(days=p * 200))


def _guess_vr(name: str) -> str:
    """VR for the Table E.1-1 attributes pydicom's dictionary does not know yet."""
    if name.endswith("Sequence"):
        return "SQ"
    if name.endswith("DateTime"):
        return "DT"
    if name.endswith("URI"):
        return "UR"
    return "LO"


def _basic(action: str) -> str:
    return _COMBINED.get(action, action)


def _value(vr: str, m: _Markers, tokens: set[str], uids: set[str]) -> object:
    if vr in ("LO", "SH", "CS", "AE", "LT", "ST", "UT", "UC", "PN"):
        return m.text(tokens)
    if vr == "UR":
        return "http://example.org/" + m.text(tokens)
    if vr == "DA":
        return m.date(tokens)
    if vr == "TM":
        return m.time(tokens)
    if vr == "DT":
        return m.date(tokens) + m.time(tokens)
    if vr in ("DS", "IS"):
        return m.number(tokens)
    if vr == "UI":
        return m.uid(uids)
    if vr in ("OB", "OW", "UN"):
        return m.text(tokens).encode() + b"\x00\x00"
    raise ValueError(vr)


def _private_block(ds: Dataset, m: _Markers, tokens: set[str], group: int = 0x0009) -> None:
    """Private elements with a creator (and a private SQ), and one without any creator."""
    ds.add_new((group << 16) | 0x0010, "LO", "ACME " + m.text(tokens))
    ds.add_new((group << 16) | 0x1001, "LO", m.text(tokens))
    ds.add_new((group << 16) | 0x1002, "UN", m.text(tokens).encode())
    inner = Dataset()
    inner.add_new(0x00100010, "PN", m.text(tokens))
    ds.add_new((group << 16) | 0x1003, "SQ", Sequence([inner]))
    ds.add_new(((group + 4) << 16) | 0x1010, "LO", m.text(tokens))  # no creator for 0x0D block


def _item(kw: str, action: str, m: _Markers, tokens: set[str], uids: set[str]) -> Dataset:
    """One sequence item whose content the action must remove or replace."""
    item = Dataset()
    if action == "U" or kw.startswith("Referenced"):  # reference macros: UIDs (and privates)
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = m.uid(uids)
        _private_block(item, m, tokens, 0x0029)
        return item
    if action == "D" and kw.endswith("CodeSequence"):
        item.CodeValue = m.text(tokens)
        item.CodingSchemeDesignator = "99PHI"
        item.CodeMeaning = m.text(tokens)
        return item
    item.add_new(0x0040A123, "PN", m.text(tokens))  # Person Name (D)
    item.add_new(0x0040A160, "UT", m.text(tokens))  # Text Value: outside the table
    item.add_new(0x0040A121, "DA", m.date(tokens))  # Date (D)
    item.add_new(0x0040A124, "UI", m.uid(uids))  # UID (U)
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    nested = Dataset()
    nested.add_new(0x0040A160, "UT", m.text(tokens))
    nested.add_new(0x0040A123, "PN", m.text(tokens))
    item.add_new(0x0040A730, "SQ", Sequence([nested]))  # depth 2
    _private_block(item, m, tokens, 0x0031)
    return item


def _plant_table(ds: Dataset, cf: CorpusFile, patient_m: _Markers, m: _Markers) -> None:
    """A marker in every Table E.1-1 single-tag attribute that can hold one."""
    refs = {0x00081140: cf.references[:1], 0x00082112: cf.references[1:2]}
    structural = {0x00080018, 0x0020000D, 0x0020000E, 0x00200052, 0x00100010, 0x00100020}
    for row in table.ROWS:
        name, tag_text = row[0], row[1]
        if not _TAG.match(tag_text):
            continue  # the repeating-group and private rows are planted by _repeating/_private
        tag = int(tag_text[1:5] + tag_text[6:10], 16)
        group = tag >> 16
        if group in (0x0000, 0x0002) or tag in structural or tag in ds:
            continue
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
            kw = dictionary_keyword(tag)
        except KeyError:
            vr, kw = _guess_vr(name), name.replace(" ", "")
        sink = patient_m if group == 0x0010 else m
        if vr == "SQ":
            action = _basic(row[4])
            if tag in refs:
                items = []
                for ref in refs[tag]:
                    item = Dataset()
                    item.ReferencedSOPClassUID = CTImageStorage
                    item.ReferencedSOPInstanceUID = ref
                    _private_block(item, m, cf.tokens, 0x0029)
                    items.append(item)
                ds.add(DataElement(tag, "SQ", Sequence(items)))
            else:
                ds.add(DataElement(tag, "SQ", Sequence([_item(kw, action, m, cf.tokens, cf.uids)])))
            continue
        if vr in _SKIP_VRS or vr in ("US or SS", "xs"):
            continue
        ds.add(DataElement(tag, vr, _value(vr, sink, cf.tokens, cf.uids)))


def _base(cf: CorpusFile, rows: int, cols: int, number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = cf.sop_uid
    ds.StudyInstanceUID = cf.study_uid
    ds.SeriesInstanceUID = cf.series_uid
    ds.FrameOfReferenceUID = cf.frame_of_reference_uid
    ds.Modality = "CT"
    ds.Manufacturer = "MDM Test Scanners"
    ds.PositionReferenceIndicator = ""
    ds.SeriesNumber = "1"
    ds.InstanceNumber = str(number)
    ds.PatientOrientation = ""
    ds.ImagePositionPatient = ["0", "0", str(number)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceThickness = "1"
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.KVP = "120"
    ds.AcquisitionNumber = "1"
    ds.ConvolutionKernel = "STANDARD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.BurnedInAnnotation = "NO"
    return ds


def _pixels(rows: int, cols: int, seed: int, text: str = "") -> bytes:
    rnd = random.Random(seed)
    line = bytes(rnd.randrange(256) for _ in range(512))
    data = bytearray((line * (rows * cols * 2 // 512 + 1))[: rows * cols * 2])
    if text:  # "burned in": the PHI is in the pixel bytes themselves
        data[64 : 64 + len(text)] = text.encode()
    for i in range(1, len(data), 2):
        data[i] &= 0x0F  # 12 bits stored
    return bytes(data)


def _meta(ds: Dataset, cf: CorpusFile, m: _Markers) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "0.0"
    meta.SourceApplicationEntityTitle = m.text(cf.tokens)
    meta.add_new(0x00020017, "AE", m.text(cf.tokens))
    meta.add_new(0x00020018, "AE", m.text(cf.tokens))
    meta.add_new(0x00020100, "UI", m.uid(cf.uids))
    meta.add_new(0x00020102, "OB", m.text(cf.tokens).encode())
    return meta


def _repeating(ds: Dataset, m: _Markers, tokens: set[str], rows: int, cols: int) -> None:
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000022, "LO", m.text(tokens))  # Overlay Description
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    overlay = bytearray((rows * cols + 7) // 8 + 1 & ~1)
    marker = m.text(tokens).encode()
    overlay[: len(marker)] = marker
    ds.add_new(0x60003000, "OW", bytes(overlay))
    ds.add_new(0x60004000, "LT", m.text(tokens))
    ds.add_new(0x50000005, "US", 2)
    ds.add_new(0x50002500, "LO", m.text(tokens))  # Curve Label
    ds.add_new(0x50003000, "OB", m.text(tokens).encode())  # Curve Data


def generate(
    out_dir: str | Path,
    *,
    patients: int = 2,
    studies: int = 1,
    series: int = 2,
    instances: int = 3,
    rows: int = 16,
    cols: int = 16,
    seed: int = 1,
    burned_in_every: int = 0,
    full: bool = True,
) -> Manifest:
    """Write the corpus under *out_dir* (``PAT<n>/...``, names carry no PHI) and return it.

    ``full=False`` writes ``ct_like`` headers instead of planting every table attribute.
    """
    out = Path(out_dir)
    files: list[CorpusFile] = []
    m = _Markers(seed)
    count = 0
    for p in range(patients):
        patient_m = _patient_markers(seed, p)
        patient_tokens: set[str] = set()
        name = patient_m.text(patient_tokens) + "^" + patient_m.text(patient_tokens)
        pid = patient_m.text(patient_tokens)
        for s in range(studies):
            study_uid = m.uid(set())
            for r in range(series):
                series_uid = m.uid(set())
                for_uid = m.uid(set())
                first = ""
                previous = ""
                for i in range(instances):
                    count += 1
                    cf = CorpusFile(
                        path=out / f"PAT{p}" / f"ST{s}" / f"SE{r}" / f"IM{i}.dcm",
                        patient=p,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        sop_uid=m.uid(set()),
                        frame_of_reference_uid=for_uid,
                        references=[u for u in (previous, first) if u],
                        burned_in=bool(burned_in_every) and count % burned_in_every == 0,
                    )
                    cf.uids |= {study_uid, series_uid, for_uid, cf.sop_uid}
                    cf.tokens |= patient_tokens
                    if full:
                        ds = _base(cf, rows, cols, i + 1)
                        ds.PatientName = name
                        ds.PatientID = pid
                        # patient-level markers: the same values for every file of the patient
                        pm = _patient_markers(seed, p)
                        pm.k = 3
                        _plant_table(ds, cf, pm, m)
                        _private_block(ds, m, cf.tokens)
                        _repeating(ds, m, cf.tokens, rows, cols)
                        ds.add_new(0xFFFCFFFC, "OB", m.text(cf.tokens).encode())
                    else:
                        ds = ct_like(cf, name, pid, rows, cols, i + 1, m)
                    burned = m.text(cf.tokens) if cf.burned_in else ""
                    if cf.burned_in:
                        ds.BurnedInAnnotation = "YES"
                    ds.PixelData = _pixels(rows, cols, seed + count, burned)
                    ds.file_meta = _meta(ds, cf, m)
                    ds.preamble = (m.text(cf.tokens).encode() * 16)[:128]
                    cf.path.parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(cf.path, enforce_file_format=True)
                    files.append(cf)
                    first = first or cf.sop_uid
                    previous = cf.sop_uid
    return Manifest(files)


def ct_like(
    cf: CorpusFile, name: str, pid: str, rows: int, cols: int, number: int, m: _Markers
) -> Dataset:
    """A realistic CT header: PHI only where scanners put it (patient, study, staff, site)."""
    ds = _base(cf, rows, cols, number)
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = "19450312"
    ds.PatientSex = "F"
    ds.PatientAge = "079Y"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = m.date(cf.tokens)
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = m.time(cf.tokens)
    ds.AccessionNumber = m.text(cf.tokens)
    ds.StudyID = m.text(cf.tokens)
    ds.ReferringPhysicianName = m.text(cf.tokens)
    ds.OperatorsName = m.text(cf.tokens)
    ds.InstitutionName = m.text(cf.tokens)
    ds.InstitutionAddress = m.text(cf.tokens)
    ds.StationName = m.text(cf.tokens)
    ds.StudyDescription = m.text(cf.tokens)
    ds.SeriesDescription = m.text(cf.tokens)
    ds.ProtocolName = m.text(cf.tokens)
    ds.DeviceSerialNumber = m.text(cf.tokens)
    ds.SoftwareVersions = "1.0"
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = "350"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "200"
    ds.Exposure = "100"
    ds.FilterType = "BODY"
    ds.GeneratorPower = "24"
    ds.FocalSpots = "0.7"
    ds.PatientPosition = "HFS"
    ds.SliceLocation = str(number)
    ds.InstanceCreationDate = ds.StudyDate
    ds.InstanceCreationTime = ds.StudyTime
    if cf.references:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = cf.references[0]
        ds.ReferencedImageSequence = Sequence([item])
    ds.add_new(0x00090010, "LO", "ACME 1.1")
    ds.add_new(0x00091001, "LO", m.text(cf.tokens))
    ds.add_new(0x00091002, "DS", "1.5")
    return ds


def leaks(data: bytes, tokens: set[str]) -> set[str]:
    """Planted tokens found in *data* (text markers by one scan, others one by one)."""
    found = {t.decode() for t in _TEXT.findall(data)} & tokens
    # Pseudonymous 2.25 UIDs are long digit strings: a planted date may occur inside one by
    # chance, so digits tokens are searched with those UIDs masked out.
    masked = _PSEUDO_UID.sub(b"", data)
    for token in tokens:
        if not token.startswith("PHI") and token.encode() in masked:
            found.add(token)
    return found
