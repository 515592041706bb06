"""The anonymized instance as a Part 10 file: MDM's own file meta, then the dataset.

Deterministic bytes are the point: a re-recall must give back the very bytes the first recall
encrypted (docs/recall.md), whatever received the instance and whichever version of it. So
the file meta is MDM's, written directly (six elements; pydicom's ``dcmwrite`` around the
dataset, copying, validating and re-encoding the meta, cost 40 % of the encoding). The
dataset's elements still raw (as received: most of them, Pixel Data included) are written
here, header and bytes, and the others by pydicom's ``write_data_element`` (``_chunks``):
pydicom's own loop gives each element a buffer of its own and copies Pixel Data three times,
which was half the encoding of a CT instance. The result is byte-for-byte what
``encode_with_dcmwrite`` gives (tested on every transfer syntax of pydicom's test files, as
read and as anonymized); big endian, and a deflated transfer syntax, go through pydicom.

Measured and left out: copying runs of untouched elements straight from the received bytes
(rather than element by element) saved only ~0.08 ms more: the anonymizer touches or empties
every few elements, which breaks the runs.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Sequence

from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.tag import Tag, tag_in_exception
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

#: Who wrote the anonymized files (PS3.10 7.1): MDM, as a UUID-derived UID (PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.327031575530656635365885800493619514913"
#: Fixed, not the package version: a new value changes every file's bytes, i.e. every file
#: would be a new version at its next recall (docs/recall.md).
IMPLEMENTATION_VERSION_NAME = "MDM_1"


def encode(ds: Dataset) -> bytes:
    """The anonymized instance as a Part 10 file (zeroed preamble), deterministic bytes.

    The file meta is MDM's own, rebuilt here: what the receiver put there (pynetdicom's or
    dcmtk's implementation UID and version, the sending AE title) depends on the transport and
    its version, and a re-recall must produce the same bytes whatever received the instance.
    """
    received = getattr(ds, "file_meta", None)
    syntax = getattr(received, "TransferSyntaxUID", None) if received is not None else None
    if syntax is None:
        raise ValueError("the instance has no transfer syntax in its file meta")
    if syntax == DeflatedExplicitVRLittleEndian:
        return encode_with_dcmwrite(ds, syntax)
    meta = _meta_bytes(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(syntax))
    little, implicit = syntax != ExplicitVRBigEndian, syntax == ImplicitVRLittleEndian
    if can_chunk(ds, syntax):
        return b"".join(_chunks(ds, meta, implicit))
    out = DicomBytesIO()
    out.write(meta)
    out.is_little_endian, out.is_implicit_VR = little, implicit
    write_dataset(out, ds)
    return out.getvalue()


Part = tuple[int, bytes, "bytes | memoryview"]


def core_parts(ds: Dataset, syntax: str) -> tuple[str, str, list[Part]]:
    """What ``encode`` writes of *ds*, taken apart: (SOP Class UID, SOP Instance UID, the
    ``(tag, header, value)`` of every element). Reading the two UIDs first, as ``encode``
    does for the file meta, converts them, so pydicom writes them: same bytes as ``encode``.
    *ds* must pass ``can_chunk``. For the recall's element-wise path."""
    sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    return sop_class, sop_instance, list(elements(ds, syntax == ImplicitVRLittleEndian))


def assemble(
    syntax: str, sop_class: str, sop_instance: str, parts: Sequence[Part], others: Sequence[Part]
) -> bytes:
    """The Part 10 file of ``core_parts`` with *others* merged in: elements that are not in
    the core, in tag order, encoded as ``_chunks`` would (``mdm.workers.elementwise``)."""
    out: list[bytes | memoryview] = [_meta_bytes(sop_class, sop_instance, str(syntax))]
    append = out.append
    i, count = 0, len(others)
    for tag, head, value in parts:
        while i < count and others[i][0] < tag:
            _, h, v = others[i]
            append(h)
            append(v)
            i += 1
        append(head)
        append(value)
    for _, h, v in others[i:]:
        append(h)
        append(v)
    return b"".join(out)


def _chunks(ds: Dataset, meta: bytes, implicit: bool) -> Iterator[bytes]:
    """``write_dataset`` for a little-endian dataset in its own encoding and character set,
    with the common case done here: an element still raw (untouched since it was read: most
    of them, Pixel Data included) is its bytes behind a packed header, with no per-element
    buffer and no copy of its value but the final join. Everything else (elements the
    anonymizer changed, sequences, undefined lengths, a short-VR value too long for its
    length field, which pydicom writes as UN) goes through pydicom's ``write_data_element``,
    one element at a time. Same bytes as ``write_dataset`` (tested on pydicom's test files,
    as read and anonymized); half the encoding time of a CT instance (docs/recall.md)."""
    yield meta
    for _tag, head, value in elements(ds, implicit):
        yield head
        yield value


def elements(ds: Dataset, implicit: bool) -> Iterator[tuple[int, bytes, bytes]]:
    """``(tag, header, value)`` per element of *ds* in tag order, as ``_chunks`` writes them
    (an element written by pydicom is all header, with an empty value)."""
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    items = ds._dict
    for tag in sorted(items, key=int):  # BaseTag's own comparisons are Python code
        group, number = tag >> 16, tag & 0xFFFF
        if number == 0 and group > 6:
            continue  # retired group length: write_dataset leaves it out too
        elem = items[tag]
        if type(elem) is RawDataElement and type(elem.value) is bytes and elem.length != _UNDEFINED:
            head = raw_header(group, number, elem.VR, len(elem.value), implicit)
            if head is not None:
                yield int(tag), head, elem.value
                continue
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, implicit
        with tag_in_exception(Tag(tag)):
            write_data_element(out, ds.get_item(tag), encodings)
        yield int(tag), out.getvalue(), b""


def raw_header(group: int, number: int, vr: str | None, size: int, implicit: bool) -> bytes | None:
    """The header ``_chunks`` writes before a raw value, little endian; None when pydicom
    must write the element (no usable VR, or a value too long for a short VR's length)."""
    if implicit:
        return _IMPLICIT(group, number, size)
    if vr in _LONG_VRS:
        return _EXPLICIT_LONG(group, number, vr.encode("ascii"), size)
    if vr is not None and len(vr) == 2 and size <= 0xFFFF:
        return _EXPLICIT(group, number, vr.encode("ascii"), size)
    return None


def can_chunk(ds: Dataset, syntax: str) -> bool:
    """Whether ``encode`` writes *ds* element by element (``_chunks``): little endian, not
    deflated, still in the encoding and character set it was read in."""
    if syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        return False
    implicit = syntax == ImplicitVRLittleEndian
    return bool(
        (implicit, True) == ds.original_encoding and ds.original_character_set == ds._character_set
    )


_UNDEFINED = 0xFFFFFFFF
#: Explicit VRs with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2; pydicom's list).
_LONG_VRS = frozenset(EXPLICIT_VR_LENGTH_32)
_IMPLICIT = struct.Struct("<HHI").pack
_EXPLICIT = struct.Struct("<HH2sH").pack
_EXPLICIT_LONG = struct.Struct("<HH2s2xI").pack


def encode_with_dcmwrite(ds: Dataset, syntax: str) -> bytes:
    """``encode`` through pydicom's ``dcmwrite`` (the reference ``encode`` is tested against)."""
    ds.preamble = b"\x00" * 128
    meta = ds.file_meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _meta_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble, ``DICM`` and the file meta group, explicit VR little endian (PS3.10 7.1)."""

    def element(number: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b" " if vr == b"SH" else b"\0"
        if vr == b"OB":
            return struct.pack("<HH2s2xI", 2, number, vr, len(value)) + value
        return struct.pack("<HH2sH", 2, number, vr, len(value)) + value

    group = b"".join(
        (
            element(0x0001, b"OB", b"\x00\x01"),
            element(0x0002, b"UI", sop_class.encode("ascii")),
            element(0x0003, b"UI", sop_instance.encode("ascii")),
            element(0x0010, b"UI", syntax.encode("ascii")),
            element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            element(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
        )
    )
    length = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(group))
    return b"\x00" * 128 + b"DICM" + length + group
