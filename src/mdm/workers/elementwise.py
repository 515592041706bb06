"""The recall of one instance element by element: the PACS's bytes to the anonymized Part 10
file, its identity record and its header JSON, building pydicom elements only where needed.

``InstanceProcessor`` first tries ``Elementwise.process``; ``None`` means "take the whole
dataset path" (``dcmread``, ``Anonymizer.anonymize``, ``part10.encode``, ``header_json``),
which gives the same output by construction and reports errors the usual way. How:

1. the file meta and the top-level elements are located with ``struct`` (no decoding);
2. ``ElementPlan`` (``mdm.dicom.anonymize.elements``) sorts them: ``PASS`` elements go out as
   they came (header and a view of their bytes), ``MEMO`` elements through ``ElementMemo``
   (the walker's own result on that element alone, remembered per value), and ``CORE``
   elements into a small Part 10 buffer that ``dcmread`` reads and ``Anonymizer.anonymize``
   de-identifies as usual (identity record, pseudonyms, private elements, sequences, marks);
3. ``part10.encode_merged`` writes the core and merges the other elements in tag order; the
   header JSON takes the core's from ``HeaderMemo.convert`` and the others' from
   ``HeaderMemo.raw``, in the order the whole-dataset path gives.

Anything unusual declines: no preamble, big endian, deflated or unknown transfer syntax, a VR
pydicom would not read as is, elements out of order or running past the end, a file whose
encoding pydicom would re-detect, options that scrub free text. Output bytes, identity
record and header JSON equal the whole-dataset path's (tests/unit/workers/test_elementwise.py,
on the corpus and on every little-endian file of pydicom's test data).
"""

from __future__ import annotations

import io
import struct
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import ENCODED_VR, data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from mdm.dicom.anonymize import Anonymizer, IdentityRecord
from mdm.dicom.anonymize.elements import CHARSET, CORE, MEMO, PASS, ElementMemo, ElementPlan
from mdm.workers.header import HeaderMemo
from mdm.workers.part10 import can_chunk, encode_merged, raw_header

_UNDEFINED = 0xFFFFFFFF
_VRS = {vr: vr.decode("ascii") for vr in ENCODED_VR if len(vr) == 2}
_LONG = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_IMPLICIT = struct.Struct("<HHI").unpack_from
_LENGTH = struct.Struct("<I").unpack_from


class _Declined(Exception):
    """Not for this path: the whole-dataset path takes the instance."""


@dataclass(frozen=True)
class Anonymized:
    """One instance through the element-wise path."""

    plaintext: bytes
    identity: IdentityRecord
    header: dict[str, Any]


class _Element(NamedTuple):
    """Where one top-level element lies in the received bytes, and its kind (a tuple: one
    is made per element of every instance)."""

    tag: int
    vr: str | None
    head: int  # offset of the element's header
    value: int  # offset of its value
    end: int
    kind: int


class Elementwise:
    """The element-wise path for one anonymizer (thread-safe); ``taken`` and ``declined``
    count the instances each way, for the worker's report."""

    def __init__(self, anonymizer: Anonymizer, headers: HeaderMemo) -> None:
        self.anonymizer = anonymizer
        self.headers = headers
        self.plan = ElementPlan(anonymizer)
        self.memo = ElementMemo(anonymizer, self.plan)
        self.taken = 0
        self.declined = 0
        self._lock = threading.Lock()

    def process(self, data: bytes) -> Anonymized | None:
        """The anonymized instance, or None: take the whole-dataset path (which also reports
        whatever is wrong with the instance, with the usual reasons)."""
        result = None
        if self.plan.usable:
            try:
                result = self._process(data)
            except Exception:  # the whole-dataset path reports it properly
                result = None
        with self._lock:
            if result is None:
                self.declined += 1
            else:
                self.taken += 1
        return result

    def _process(self, data: bytes) -> Anonymized | None:
        start, syntax = _meta(data)
        uid = UID(syntax)
        if not uid.is_transfer_syntax or uid.is_deflated or not uid.is_little_endian:
            return None
        implicit = uid.is_implicit_VR
        elements, undefined, charset = self._elements(data, start, implicit)
        view = memoryview(data)
        core = _core(data, elements, undefined, charset, implicit)
        if not can_chunk(core, syntax):
            return None
        result = self.anonymizer.anonymize(core)
        identity = result.identity
        shift = identity.date_shift_days
        uids = dict(identity.uid_map)
        others: list[tuple[int, bytes, bytes | memoryview]] = []
        changed: dict[int, bytes] = {}
        for e in elements:
            if e.kind == CORE:
                continue
            group, number = e.tag >> 16, e.tag & 0xFFFF
            if e.kind == PASS:
                size = e.end - e.value
                head = raw_header(group, number, e.vr, size, implicit)
                if head is None:
                    return None
                others.append((e.tag, head, view[e.value : e.end]))
                continue
            raw = _raw(data, e, implicit)
            value, remapped = self.memo.transform(raw, shift, charset)
            uids.update(remapped)
            if value is None:
                continue
            head = raw_header(group, number, e.vr, len(value), implicit)
            if head is None:
                return None
            others.append((e.tag, head, value))
            changed[e.tag] = value
        plaintext = encode_merged(core, syntax, others)
        header = self._header(core, elements, changed, data, charset)
        if uids != identity.uid_map:
            identity = IdentityRecord(**{**identity.as_dict(), "uid_map": uids})
        return Anonymized(plaintext, identity, header)

    def _header(
        self,
        core: Any,
        elements: list[_Element],
        changed: dict[int, bytes],
        data: bytes,
        charset: RawDataElement | None,
    ) -> dict[str, Any]:
        """The header JSON in the whole-dataset path's order: the file's, then what the
        anonymizer added (the de-identification marks)."""
        headers = self.headers
        core_json = headers.convert(core)
        encoding = headers.encoding(core)
        out: dict[str, Any] = {}
        for e in elements:
            if e.tag >> 16 == 0x7FE0:
                continue
            key = f"{e.tag:08X}"
            if e.kind == CORE:
                got = core_json.pop(key, None)
            elif e.kind == MEMO:
                new = changed.get(e.tag)
                got = None if new is None else headers.raw(encoding, e.tag, e.vr, new, charset)
            else:
                got = headers.raw(encoding, e.tag, e.vr, data[e.value : e.end], charset)
            if got is not None:
                out[key] = got
        out.update(core_json)
        return out

    def _elements(
        self, data: bytes, pos: int, implicit: bool
    ) -> tuple[list[_Element], dict[int, Any], RawDataElement | None]:
        """The top-level elements from *pos*, classified; the elements of undefined length as
        pydicom reads them; the Specific Character Set. Raises _Declined on anything pydicom
        would read differently from a plain walk."""
        size = len(data)
        if size - pos >= 6 and _looks_implicit(data, pos) != implicit:
            raise _Declined("pydicom would switch encodings")
        kind = self.plan.kind
        out: list[_Element] = []
        undefined: dict[int, Any] = {}
        charset: RawDataElement | None = None
        encoding: str | list[str] = default_encoding
        last = -1
        while size - pos >= 8:
            if implicit:
                group, number, length = _IMPLICIT(data, pos)
                vr = None
                value = pos + 8
            else:
                group, number, code, length = _EXPLICIT(data, pos)
                vr = _VRS.get(code)
                if vr is None:
                    raise _Declined("a VR pydicom does not know")
                value = pos + 8
                if code in _LONG:
                    if size - pos < 12:
                        raise _Declined("truncated")
                    length = _LENGTH(data, pos + 8)[0]
                    value = pos + 12
            tag = group << 16 | number
            if tag <= last or group == 0xFFFE:
                raise _Declined("elements out of order")
            last = tag
            if length == _UNDEFINED:
                # pydicom's own reader finds the end (sequences, encapsulated pixel data),
                # with the dataset's character set for the items, as dcmread would.
                fp = io.BytesIO(data)
                fp.seek(pos)
                undefined[tag] = next(data_element_generator(fp, implicit, True, encoding=encoding))
                end = fp.tell()
                out.append(_Element(tag, vr, pos, value, end, CORE))
            else:
                end = value + length
                if end > size:
                    raise _Declined("an element runs past the end")
                # pydicom reads an empty value as None, which the walk and the writer treat
                # apart (converted, written with the dictionary VR): the core's business.
                what = kind(tag, vr) if length else CORE
                out.append(_Element(tag, vr, pos, value, end, what))
                if tag == CHARSET:
                    charset = _raw(data, out[-1], implicit)
                    encoding = _encodings(charset)
            pos = end
        if pos != size:
            raise _Declined("trailing bytes")
        return out, undefined, charset


def _raw(data: bytes, e: _Element, implicit: bool) -> RawDataElement:
    """The element as pydicom's reader gives it (an empty value is pydicom's empty raw value)."""
    length = e.end - e.value
    value = (
        data[e.value : e.end] if length else cast(bytes | None, empty_value_for_VR(e.vr, raw=True))
    )
    return RawDataElement(BaseTag(e.tag), e.vr, length, value, e.value, implicit, True)


def _encodings(charset: RawDataElement | None) -> str | list[str]:
    """The Python encodings of a Specific Character Set element, as ``read_dataset`` has it."""
    if charset is None:
        return default_encoding
    return convert_encodings(convert_raw_data_element(charset).value)


def _core(
    data: bytes,
    elements: list[_Element],
    undefined: dict[int, Any],
    charset: RawDataElement | None,
    implicit: bool,
) -> Dataset:
    """The CORE elements as the dataset ``read_dataset`` would build of them (no file meta:
    ``part10`` writes MDM's own)."""
    raws: dict[BaseTag, Any] = {}
    for e in elements:
        if e.kind == CORE:
            got = undefined.get(e.tag)
            raws[BaseTag(e.tag)] = got if got is not None else _raw(data, e, implicit)
    core = Dataset(raws)
    core.set_original_encoding(implicit, True, _encodings(charset))
    return core


def _meta(data: bytes) -> tuple[int, str]:
    """(offset of the dataset, transfer syntax) of a Part 10 file with an explicit VR little
    endian file meta (PS3.10 7.1)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _Declined("no Part 10 preamble")
    pos, size, syntax = 132, len(data), None
    while size - pos >= 8:
        group, number, code, length = _EXPLICIT(data, pos)
        if group != 2:
            break
        if code not in _VRS:
            raise _Declined("file meta not in explicit VR")
        value = pos + 8
        if code in _LONG:
            length = _LENGTH(data, pos + 8)[0]
            value = pos + 12
        if value + length > size:
            raise _Declined("truncated file meta")
        if number == 0x0010:
            syntax = data[value : value + length].decode("ascii").strip(" \x00")
        pos = value + length
    if syntax is None:
        raise _Declined("no transfer syntax")
    return pos, syntax


def _looks_implicit(data: bytes, pos: int) -> bool:
    """pydicom's test (``filereader._is_implicit_vr``): a dataset whose first element has no
    two capital letters where an explicit VR would be is read as implicit VR."""
    a, b = data[pos + 4], data[pos + 5]
    return not (0x40 < a < 0x5B and 0x40 < b < 0x5B)
