"""Anonymize files and directory trees: one bad file never stops a batch.

Each input file ends as exactly one of:

* ``done``: written to ``OUT/<study>/<series>/<instance>.dcm`` with *pseudonymous* UIDs (input
  paths often carry patient names, so they are never mirrored into the output);
* ``refused``: the anonymizer refused it (burned-in annotation, risky SOP class, ...);
* ``failed``: not DICOM, truncated, or undecodable (InvalidDicom, naming the file and why).

Refused and failed files are copied, unchanged, to the quarantine directory when one is given.
The quarantine holds *identified* data: keep it outside the export tree (the CLI puts it next to,
never inside, ``--out``). Outputs are written to a temporary name and renamed, so a crash never
leaves a partial file under its final name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mdm.dicom.anonymize import captured_warnings
from mdm.errors import AnonymizationRefused, InvalidDicom, MDMError

if TYPE_CHECKING:
    from mdm.dicom.anonymize import Anonymizer, IdentityRecord

logger = logging.getLogger(__name__)

DONE, REFUSED, FAILED = "done", "refused", "failed"


@dataclass(frozen=True)
class Outcome:
    """What happened to one input file (no patient data: paths, pseudonymous UIDs, reasons)."""

    source: str
    status: str
    output: str | None = None
    reason: str = ""
    error: str = ""
    quarantined: str | None = None
    identity: IdentityRecord | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "status": self.status}
        if self.output:
            out["output"] = self.output
        if self.reason:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
        if self.quarantined:
            out["quarantined"] = self.quarantined
        return out


def iter_files(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Every regular file under *inputs* (files as given, directories walked in sorted order)."""
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


def read_dataset(path: Path) -> Dataset:
    """Read a DICOM file; raise InvalidDicom naming the file and the reason.

    Files without the Part 10 preamble are accepted only if they parse as a data set with a
    SOP Class or SOP Instance UID (old ACR-NEMA-style files); anything else is not DICOM.
    """
    with captured_warnings() as caught:  # pydicom warns on odd values; the walk decides
        try:
            try:
                ds = dcmread(path)
            except InvalidDicomError:
                ds = dcmread(path, force=True)
                if 0x00080016 not in ds and 0x00080018 not in ds:
                    raise InvalidDicom(
                        f"{path}: not a DICOM file (no preamble and no SOP UIDs)", path=str(path)
                    ) from None
        except MDMError:
            raise
        except FileNotFoundError as exc:
            raise InvalidDicom(f"{path}: no such file", path=str(path)) from exc
        except (EOFError, ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidDicom(
                f"{path}: cannot parse ({type(exc).__name__}: {_short(exc)})", path=str(path)
            ) from exc
    if any("End of file" in str(w.message) for w in caught):
        raise InvalidDicom(f"{path}: truncated: the file ends inside a sequence", path=str(path))
    _check_complete(ds, path)
    return ds


def _check_complete(ds: Dataset, path: Path) -> None:
    """pydicom stops silently at a truncated element: catch what can be caught.

    The last element must hold the length it declares and end where the file ends (a few
    bytes left over are a cut element header). A cut exactly between two elements looks like a
    shorter valid file and cannot be told apart (pydicom's own test data holds images stripped
    of their Pixel Data on purpose, so a missing Pixel Data is not taken as proof).
    """
    keys = list(ds.keys())
    if not keys:
        raise InvalidDicom(
            f"{path}: no data element could be read (empty or truncated)", path=str(path)
        )
    tag = keys[-1]
    last = ds.get_item(tag)
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF:
        got = len(last.value) if last.value is not None else 0
        if got < last.length:
            raise InvalidDicom(
                f"{path}: truncated: element {where} declares {last.length} bytes, "
                f"the file holds {got}",
                path=str(path),
            )
        left = path.stat().st_size - (last.value_tell + last.length)
        if 0 < left < 8:
            raise InvalidDicom(
                f"{path}: truncated: {left} byte(s) of an element header after {where}",
                path=str(path),
            )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else "truncated or corrupt"


def write_dataset(ds: Dataset, dst: Path) -> None:
    """Write *ds* as a Part 10 file, atomically, with a zeroed preamble (it may hold anything)."""
    ds.preamble = b"\x00" * 128
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit is None or implicit:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    # A Part 10 file needs both SOP UIDs in its meta; a data set without them (it happens in
    # test data) is written as it came, meta included, rather than refused.
    part10 = "SOPClassUID" in ds and "SOPInstanceUID" in ds
    if part10:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # pydicom's enforce_file_format re-validates and rebuilds a meta that is already complete
    # when the input was a Part 10 file (a quarter of a millisecond per file): only ask for it
    # when something is missing. The group length is recomputed on writing either way.
    enforce = part10 and not all(tag in meta for tag in _META_REQUIRED)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".dcm", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh, captured_warnings():
            ds.save_as(fh, enforce_file_format=enforce)
        os.replace(tmp, dst)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, MDMError | OSError):
            raise InvalidDicom(
                f"{dst.name}: cannot encode the anonymized data set ({type(exc).__name__})"
            ) from exc
        raise


_META_REQUIRED = (0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)


def output_path(out_dir: Path, ds: Dataset, fallback: str = "no-instance") -> Path:
    """``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (pseudonymous).

    *fallback* names an instance that has no SOP Instance UID (a keyed hash of its source).
    """
    study = str(ds.get("StudyInstanceUID", "") or "no-study")
    series = str(ds.get("SeriesInstanceUID", "") or "no-series")
    sop = str(ds.get("SOPInstanceUID", "") or fallback)
    return out_dir / _safe(study) / _safe(series) / f"{_safe(sop)}.dcm"


def _safe(part: str) -> str:
    """A path component from a UID: never empty, never ``.`` or ``..``, no separators."""
    part = part.strip()
    if part[:1].isdigit() and part.replace(".", "").isdigit():  # a UID, the usual case
        return part
    cleaned = "".join(c for c in part if c.isalnum() or c in ".-_").lstrip(".")
    return cleaned or "unnamed"


def _quarantine(src: Path, quarantine: Path | None, status: str) -> str | None:
    if quarantine is None:
        return None
    target = quarantine / status / src.name
    n = 1
    while target.exists():
        target = quarantine / status / f"{src.stem}.{n}{src.suffix}"
        n += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(src, target)
    except OSError:
        return None
    return str(target)


def anonymize_one(
    anonymizer: Anonymizer, src: Path, out_dir: Path, quarantine: Path | None = None
) -> Outcome:
    """Anonymize one file into *out_dir*; never raises for a bad input, returns its Outcome."""
    try:
        ds = read_dataset(src)
        result = anonymizer.anonymize(ds)
        fallback = ""
        if 0x00080018 not in result.dataset:  # name it by a keyed hash of where it came from
            fallback = anonymizer.pseudonymous_uid("file:" + str(src.resolve()))
        dst = output_path(out_dir, result.dataset, fallback or "no-instance")
        write_dataset(result.dataset, dst)
    except AnonymizationRefused as exc:
        reason = str(exc.context.get("reason", "refused"))
        logger.info("refused an input file (%s)", reason)
        return Outcome(
            str(src),
            REFUSED,
            reason=reason,
            error=exc.message,
            quarantined=_quarantine(src, quarantine, REFUSED),
        )
    except InvalidDicom as exc:
        message = exc.message if exc.message.startswith(str(src)) else f"{src}: {exc.message}"
        logger.info("failed to anonymize an input file (InvalidDicom)")
        return Outcome(
            str(src),
            FAILED,
            reason="invalid-dicom",
            error=message,
            quarantined=_quarantine(src, quarantine, FAILED),
        )
    except OSError as exc:
        return Outcome(
            str(src),
            FAILED,
            reason="io-error",
            error=f"{src}: {type(exc).__name__}: {exc.strerror or exc}",
            quarantined=_quarantine(src, quarantine, FAILED),
        )
    return Outcome(str(src), DONE, output=str(dst), identity=result.identity)


def anonymize_paths(
    anonymizer: Anonymizer,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    quarantine: str | Path | None = None,
) -> Iterator[Outcome]:
    """Stream the outcomes of every file under *inputs*, one at a time (constant memory)."""
    out = Path(out_dir)
    q = Path(quarantine) if quarantine is not None else None
    for src in iter_files(inputs):
        yield anonymize_one(anonymizer, src, out, q)


@dataclass
class Summary:
    """Counts and per-file outcomes: the machine-readable report of a batch."""

    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def as_json(self, describe: str = "") -> dict[str, Any]:
        return {
            "profile": describe,
            "done": self.count(DONE),
            "refused": self.count(REFUSED),
            "failed": self.count(FAILED),
            "files": [o.as_json() for o in self.outcomes],
        }
