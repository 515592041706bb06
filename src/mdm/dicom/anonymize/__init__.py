"""De-identification by DICOM PS3.15 Annex E: the Basic Profile and every option, keyed.

::

    from mdm.dicom.anonymize import Anonymizer, Options

    anonymizer = Anonymizer(options=Options(retain_long_modified_dates=True), secret=site_secret)
    result = anonymizer.anonymize(dataset)      # in place; raises AnonymizationRefused
    vault.store(result.identity)                # originals + pseudonyms: never log it
    result.dataset.save_as(path)

The action table is Table E.1-1 of the edition in ``_table_e1_1`` (generated from the NEMA
DocBook by tools/gen_profile.py). The same input and the same secret always give the same
output bytes; pseudonyms, UIDs and date shifts are HMAC-SHA-256 under the secret. See
docs/anonymization.md for what is done, what is refused, and the limits.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from mdm.dicom.anonymize import burned_in
from mdm.dicom.anonymize._table_e1_1 import EDITION, SOURCE_SHA256
from mdm.dicom.anonymize.handlers import Walker, _Instance, _text
from mdm.dicom.anonymize.profile import OPTION_CODES, Options, Profile
from mdm.dicom.anonymize.pseudonyms import Pseudonymizer
from mdm.dicom.anonymize.scrub import scrub_pattern
from mdm.errors import ConfigError, InvalidDicom, MDMError

__all__ = [
    "EDITION",
    "OPTION_CODES",
    "SOURCE_SHA256",
    "Anonymizer",
    "IdentityRecord",
    "Options",
    "Profile",
    "Result",
]

logger = logging.getLogger(__name__)


class _WithholdValues(logging.Filter):
    """pydicom logs offending values verbatim at WARNING ("Invalid value for VR UI: '...'"),
    and an offending value may be a name or an ID. Quoted values are withheld from every record
    of the ``pydicom`` logger once the anonymizer is imported; the message stays useful."""

    _QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._QUOTED.sub("'<value withheld>'", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _withhold_pydicom_values() -> None:
    target = logging.getLogger("pydicom")
    if not any(isinstance(f, _WithholdValues) for f in target.filters):
        target.addFilter(_WithholdValues())


_withhold_pydicom_values()

#: ``warnings.catch_warnings`` swaps module-wide state and is not thread-safe: two threads
#: anonymizing at once (the recall worker's pool) restored each other's state, and a pydicom
#: warning raised while decoding an *original* value reached stderr. One lock per process
#: around the capture (re-entrant); the anonymizer is pure Python, so no parallelism is lost.
_CAPTURE = threading.RLock()


@contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Warnings raised inside are recorded, never shown (they may quote original values);
    thread-safe, unlike ``warnings.catch_warnings`` alone."""
    with _CAPTURE, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


#: Type 1C attributes the table keeps (D) whose condition is an attribute it removes (X):
#: kept alone they would make the instance invalid (PS3.3 C.7.1.3: the committee name is
#: required if, and only if, the approval number is present).
_CONDITIONAL = {0x00120081: 0x00120082}
_FILE_META_REMOVE = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)


@dataclass(frozen=True, repr=False)
class IdentityRecord:
    """Original identifiers and their pseudonyms, for the identity vault only.

    ``repr`` shows no value, so an accidental ``logger.debug("%r", record)`` leaks nothing;
    read the fields explicitly where the vault stores them.
    """

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    accession_number: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    pseudo_patient_id: str
    pseudo_patient_name: str
    pseudo_study_instance_uid: str
    pseudo_series_instance_uid: str
    pseudo_sop_instance_uid: str
    date_shift_days: int | None
    uid_map: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return "IdentityRecord(<identity withheld>)"

    __str__ = __repr__

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Result:
    """The anonymized dataset (the input object, changed in place) and its identity record."""

    dataset: Dataset
    identity: IdentityRecord
    #: How many warnings pydicom raised while decoding values (their text is not kept: it
    #: may quote original values).
    warnings: int = 0


@lru_cache(maxsize=32)
def _profile(options: Options) -> Profile:
    return Profile.build(options)


class Anonymizer:
    """Applies one option set under one site secret; build it once, reuse it per instance.

    Parameters
    ----------
    options
        The PS3.15 options (default: Basic Profile only).
    secret
        The site secret (at least 16 bytes) keying every pseudonym; the same secret gives the
        same output everywhere, a different one unrelated output.
    profile
        A prebuilt Profile (else built from *options*, cached per option set).
    """

    def __init__(
        self,
        options: Options | None = None,
        *,
        secret: bytes,
        profile: Profile | None = None,
    ) -> None:
        self.options = options or (profile.options if profile else Options())
        self.profile = profile or _profile(self.options)
        try:
            self._pseudo = Pseudonymizer(secret)
        except ValueError as exc:
            raise ConfigError(str(exc), key="anonymize.secret_file") from None
        self._walker = Walker(self.profile, self._pseudo)
        opts = self.options
        # Free text is scrubbed only where an option keeps it (C); Basic removes it outright.
        self._scrubbing = (
            opts.clean_descriptors
            or opts.clean_structured_content
            or opts.clean_graphics
            or opts.retain_patient_characteristics
        )
        self._method = self.profile.method_description()
        self._codes = self.profile.method_codes()
        self._marks: dict[tuple[bool | None, bool | None], dict[int, Any]] = {}

    def describe(self) -> str:
        """One line for the audit log: edition, source hash, options (no patient data)."""
        names = ",".join(self.options.enabled()) or "basic"
        return f"PS3.15 {EDITION} (sha256 {SOURCE_SHA256[:12]}) options={names}"

    def anonymize(self, dataset: Dataset) -> Result:
        """De-identify *dataset* in place and return it with its identity record.

        Raises AnonymizationRefused when the pixels may carry identity (see burned_in), and
        InvalidDicom when an element cannot be decoded.
        """
        with captured_warnings() as caught:
            result = self._anonymize(dataset)
        if caught:
            logger.debug("pydicom raised %d warning(s) while anonymizing", len(caught))
        return Result(result.dataset, result.identity, len(caught))

    def _anonymize(self, ds: Dataset) -> Result:
        try:
            burned_in.check(ds, self.options.allow_burned_in_sop_classes)
            original = {kw: _get(ds, tag) for kw, tag in _IDENTITY_TAGS.items()}
        except MDMError:
            raise
        except Exception as exc:
            raise InvalidDicom(f"cannot read identifying attributes: {type(exc).__name__}") from exc
        key = _patient_key(original)
        shift = (
            self._pseudo.date_shift_days(key) if self.options.retain_long_modified_dates else None
        )
        inst = _Instance(patient_key=key, shift_days=shift)
        if self._scrubbing:
            inst.scrub = scrub_pattern(ds)
        self._walker.walk(ds, inst)
        for dependent, condition in _CONDITIONAL.items():
            if dependent in ds and condition not in ds:
                del ds[dependent]
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for tag in _FILE_META_REMOVE:
                if tag in meta:
                    del meta[tag]
            if 0x00080018 in ds:  # Table E.1-1 U, and it must follow SOP Instance UID
                if 0x00020003 in meta:
                    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            elif 0x00020003 in meta:
                media = _get(meta, 0x00020003)
                meta.MediaStorageSOPInstanceUID = self._pseudo_uid(media) or None
        self._mark(ds)
        pseudo_uid = self._pseudo_uid
        identity = IdentityRecord(
            patient_id=original["PatientID"],
            issuer_of_patient_id=original["IssuerOfPatientID"],
            patient_name=original["PatientName"],
            patient_birth_date=original["PatientBirthDate"],
            accession_number=original["AccessionNumber"],
            study_instance_uid=original["StudyInstanceUID"],
            series_instance_uid=original["SeriesInstanceUID"],
            sop_instance_uid=original["SOPInstanceUID"],
            pseudo_patient_id=_get(ds, 0x00100020),
            pseudo_patient_name=_get(ds, 0x00100010),
            pseudo_study_instance_uid=pseudo_uid(original["StudyInstanceUID"]),
            pseudo_series_instance_uid=pseudo_uid(original["SeriesInstanceUID"]),
            pseudo_sop_instance_uid=pseudo_uid(original["SOPInstanceUID"]),
            date_shift_days=shift,
            uid_map=dict(inst.uids),
        )
        return Result(ds, identity)

    def _pseudo_uid(self, uid: str) -> str:
        if not uid or self.options.retain_uids or uid.startswith("1.2.840.10008."):
            return uid
        return self._pseudo.uid(uid)

    def pseudonymous_uid(self, uid: str) -> str:
        """The pseudonym this anonymizer gives *uid* (for LFNs and catalog keys)."""
        return self._pseudo_uid(uid)

    def _mark(self, ds: Dataset) -> None:
        """PS3.15 E.1.1 / PS3.3 C.12.1: say that, and how, the instance was de-identified.

        The same five elements for every instance: in a little-endian dataset still in the
        encoding and character set it was read in (what a PACS sends), they are put in as raw
        elements encoded once per encoding (``_raw_marks``), which spares building them
        through pydicom per instance and lets ``encode`` write them as bytes. Same bytes."""
        raw = self._raw_marks(ds.original_encoding)
        if raw is not None and ds.original_character_set == ds._character_set:
            for tag, elem in raw.items():
                ds[tag] = elem
            return
        self._mark_elements(ds)

    def _raw_marks(self, encoding: tuple[bool | None, bool | None]) -> dict[int, Any] | None:
        if encoding not in ((False, True), (True, True)):
            return None  # big endian, or a dataset built in memory: element by element
        raw = self._marks.get(encoding)
        if raw is None:
            built = Dataset()
            self._mark_elements(built)
            out = DicomBytesIO()
            out.is_implicit_VR, out.is_little_endian = encoding
            write_dataset(out, built)
            implicit, little = encoding
            read = read_dataset(io.BytesIO(out.getvalue()), bool(implicit), bool(little))
            tags = list(read.keys())  # the tags: iterating a Dataset converts its elements
            raw = self._marks[encoding] = {int(tag): read.get_item(tag) for tag in tags}
        return raw

    def _mark_elements(self, ds: Dataset) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self._method
        items = []
        for value, meaning in self._codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if self.options.retain_long_full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self.options.retain_long_modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"

    def anonymize_file(self, src: str | Path, dst: str | Path | None = None) -> Result:
        """Read *src*, anonymize it, and write it to *dst* if given (atomically).

        Errors name the file: InvalidDicom (unreadable, truncated, undecodable) and
        AnonymizationRefused (with ``reason``).
        """
        from mdm.dicom.anonymize.batch import read_dataset, write_dataset

        ds = read_dataset(Path(src))
        try:
            result = self.anonymize(ds)
        except MDMError as exc:
            raise type(exc)(f"{src}: {exc.message}", **exc.context) from exc
        if dst is not None:
            write_dataset(result.dataset, Path(dst))
        return result


_IDENTITY_TAGS = {
    "PatientID": 0x00100020,
    "IssuerOfPatientID": 0x00100021,
    "PatientName": 0x00100010,
    "PatientBirthDate": 0x00100030,
    "AccessionNumber": 0x00080050,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SOPInstanceUID": 0x00080018,
}


_DECODE = frozenset({0x00100010, 0x00100020, 0x00100021, 0x00080050})


def _get(ds: Dataset, tag: int) -> str:
    """A value as text; names and IDs are decoded by pydicom (character sets), while UIDs and
    dates are read from the raw bytes, which are ASCII by definition (and cheaper)."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    if type(elem) is RawDataElement and tag not in _DECODE and type(elem.value) is bytes:
        return elem.value.decode("latin-1").strip(" \x00")
    return _text(ds[tag].value).strip(" \x00")


def _patient_key(original: dict[str, str]) -> str:
    """What identifies the patient: issuer + ID; else name + birth date; else the study."""
    if original["PatientID"]:
        return "id\x00" + original["IssuerOfPatientID"] + "\x00" + original["PatientID"]
    if original["PatientName"]:
        return "name\x00" + original["PatientName"] + "\x00" + original["PatientBirthDate"]
    return "study\x00" + original["StudyInstanceUID"]
