"""The recall of one instance element by element: the PACS's bytes to the anonymized Part 10
file, its identity record and its header JSON, building pydicom elements only where needed.

``InstanceProcessor`` first tries ``Elementwise.process``; ``None`` means "take the whole
dataset path" (``dcmread``, ``Anonymizer.anonymize``, ``part10.encode``, ``header_json``),
which gives the same output by construction and reports errors the usual way. How:

1. the file meta and the top-level elements are located with ``struct`` (no decoding);
2. ``ElementPlan`` (``mdm.dicom.anonymize.elements``) sorts them: ``PASS`` elements go out as
   they came (header and a view of their bytes), ``DROP`` elements are left out (X, and
   private elements unless Retain Safe Private keeps some), ``MEMO`` elements go through
   ``ElementMemo`` (the walker's own result on that element alone, remembered per value),
   and ``CORE`` elements make a small dataset, as ``read_dataset`` would build it of them,
   that ``Anonymizer.anonymize`` de-identifies as usual (identity record, pseudonyms,
   sequences, marks);
3. the anonymized core is remembered by its bytes without the SOP Instance UID
   (``_CoreMemo``): the next instance of the series whose core differs only there gets it
   back with its own SOP Instance UID remapped by the walker (a core that holds that UID
   elsewhere, a sequence referring to the instance itself, is not remembered);
4. ``part10.assemble`` writes the core (``part10.core_parts``) and merges the other elements
   in tag order; the header JSON takes the core's from ``HeaderMemo.convert`` and the
   others' from ``HeaderMemo.raw``, in the order the whole-dataset path gives.

Anything unusual declines: no preamble, big endian, deflated or unknown transfer syntax, a VR
pydicom would not read as is, elements out of order or running past the end, a file whose
encoding pydicom would re-detect, options that scrub free text. Output bytes, identity
record and header JSON equal the whole-dataset path's (tests/unit/workers/test_elementwise.py,
on the corpus and on every little-endian file of pydicom's test data).
"""

from __future__ import annotations

import bisect
import io
import logging
import struct
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import UID

from mdm.dicom import filemeta
from mdm.dicom.anonymize import Anonymizer, IdentityRecord
from mdm.dicom.anonymize.elements import (
    CHARSET,
    CORE,
    DROP,
    MEMO,
    PASS,
    SOP_INSTANCE,
    Decline,
    ElementMemo,
    ElementPlan,
)
from mdm.memo import Memo
from mdm.workers.header import HeaderMemo
from mdm.workers.part10 import Part, assemble, can_chunk, core_parts, raw_header

logger = logging.getLogger(__name__)

_UNDEFINED = 0xFFFFFFFF
_VRS = filemeta.VRS
_IMPLICIT = struct.Struct("<HHI").unpack_from
_LENGTH = struct.Struct("<I").unpack_from


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


@dataclass(frozen=True)
class _Core:
    """The anonymized core of one instance: what the rest of the file is merged into."""

    sop_class: str
    sop_instance: str
    parts: list[Part]  # (tag, header, value) in tag order, as ``encode`` writes them
    json: dict[str, Any]  # the core's header JSON, in the whole-dataset path's order
    encoding: tuple[Any, ...]  # ``HeaderMemo.encoding`` of the core
    identity: IdentityRecord

    def with_sop(
        self,
        path: Elementwise,
        sop: _Element,
        value: bytes,
        remapped: tuple[tuple[str, str], ...],
        original: str,
        charset: RawDataElement | None,
        implicit: bool,
    ) -> _Core:
        """This remembered core (without its SOP Instance UID) for another instance: its SOP
        Instance UID remapped by the walker (``value``), the rest as remembered."""
        head = raw_header(0x0008, 0x0018, sop.vr, len(value), implicit)
        if head is None:  # cannot be: a UID is short (checked when the core was remembered)
            raise Decline("the SOP Instance UID")
        parts = list(self.parts)
        bisect.insort(parts, (SOP_INSTANCE, head, value), key=lambda p: p[0])
        json = dict(self.json)
        got = path.headers.raw(self.encoding, SOP_INSTANCE, sop.vr, value, charset)
        if got is not None:
            json[f"{SOP_INSTANCE:08X}"] = got
        identity = IdentityRecord(
            **{
                **self.identity.as_dict(),
                "sop_instance_uid": original,
                "pseudo_sop_instance_uid": path.anonymizer.pseudonymous_uid(original),
                "uid_map": {**self.identity.uid_map, **dict(remapped)},
            }
        )
        sop_instance = value.decode("ascii").rstrip("\x00 ")
        return _Core(self.sop_class, sop_instance, parts, json, self.encoding, identity)


#: Cores larger than this are not remembered (Pixel Data in the core, in implicit VR, or
#: encapsulated: it differs per instance anyway).
CORE_MEMO_MAX = 64 << 10


class _CoreMemo:
    """Anonymized cores by their bytes without the SOP Instance UID: the instances of a
    series usually share every other core element (identity, character set, sequences),
    and the core's anonymization does not depend on the SOP Instance UID but through that
    element itself and the two identity fields named after it. Bounded (``mdm.memo.Memo``);
    thread-safe."""

    def __init__(self, limit: int = 512) -> None:
        self._cores: Memo[tuple[str, bytes], _Core] = Memo(limit)
        self.hits = 0

    def get(self, key: tuple[str, bytes]) -> _Core | None:
        core = self._cores.get(key)
        if core is not None:
            self.hits += 1
        return core

    def remember(
        self, key: tuple[str, bytes], core: _Core, sop: _Element, original: str, implicit: bool
    ) -> None:
        """Keep *core* without what belongs to its SOP Instance UID, if a later instance can
        have its own put back exactly: the element as ``encode`` wrote it must be the raw
        value the walker gives (``_Core.with_sop``), and the UID the identity's."""
        tag = SOP_INSTANCE
        written = [p for p in core.parts if p[0] == tag]
        if len(written) != 1 or core.identity.pseudo_sop_instance_uid != core.sop_instance:
            return
        value = core.sop_instance.encode("ascii")
        value += b"\x00" * (len(value) & 1)
        head = raw_header(0x0008, 0x0018, sop.vr, len(value), implicit)
        if head is None or bytes(written[0][1]) + bytes(written[0][2]) != head + value:
            return
        uids = {k: v for k, v in core.identity.uid_map.items() if k != original}
        kept = _Core(
            core.sop_class,
            "",
            [p for p in core.parts if p[0] != tag],
            {k: v for k, v in core.json.items() if k != f"{tag:08X}"},
            core.encoding,
            IdentityRecord(**{**core.identity.as_dict(), "uid_map": uids}),
        )
        self._cores.put(key, kept)


class Elementwise:
    """The element-wise path for one anonymizer (thread-safe); ``taken`` and ``declined``
    count the instances each way, for the worker's report."""

    def __init__(self, anonymizer: Anonymizer, headers: HeaderMemo) -> None:
        self.anonymizer = anonymizer
        self.headers = headers
        self.plan = ElementPlan(anonymizer)
        self.memo = ElementMemo(anonymizer, self.plan)
        self.cores = _CoreMemo()
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
            except Decline as exc:  # fixed texts or a tag: never a value of the instance
                logger.debug("element-wise path declined the instance: %s", exc)
            except Exception as exc:  # the whole-dataset path reports it properly
                logger.debug("element-wise path gave up: %s", type(exc).__name__)
        with self._lock:
            if result is None:
                self.declined += 1
            else:
                self.taken += 1
        return result

    def _process(self, data: bytes) -> Anonymized | None:
        meta = filemeta.read(data)
        if meta is None:
            raise Decline("no Part 10 preamble, or not an explicit VR file meta group")
        start, syntax = meta.end, meta.transfer_syntax
        uid = UID(syntax)
        if not uid.is_transfer_syntax or uid.is_deflated or not uid.is_little_endian:
            return None
        implicit = uid.is_implicit_VR
        elements, undefined, charset = self._elements(data, start, implicit)
        view = memoryview(data)
        core = self._anonymized_core(data, view, syntax, elements, undefined, charset, implicit)
        if core is None:
            return None
        identity = core.identity
        shift = identity.date_shift_days
        uids = dict(identity.uid_map)
        others: list[Part] = []
        changed: dict[int, bytes] = {}
        for e in elements:
            if e.kind == CORE or e.kind == DROP:
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
        plaintext = assemble(syntax, core.sop_class, core.sop_instance, core.parts, others)
        header = self._header(core, elements, changed, data, charset)
        if uids != identity.uid_map:
            identity = IdentityRecord(**{**identity.as_dict(), "uid_map": uids})
        return Anonymized(plaintext, identity, header)

    def _anonymized_core(
        self,
        data: bytes,
        view: memoryview,
        syntax: str,
        elements: list[_Element],
        undefined: dict[int, Any],
        charset: RawDataElement | None,
        implicit: bool,
    ) -> _Core | None:
        """The core, anonymized: from the core memo when the core's bytes but the SOP
        Instance UID were seen before (``_CoreMemo``), else through ``Anonymizer.anonymize``;
        None when ``encode`` would not write it element by element."""
        sop = next((e for e in elements if e.tag == SOP_INSTANCE), None)
        key, original = None, ""
        size = sum(e.end - e.head for e in elements if e.kind == CORE)
        if sop is not None and sop.kind == CORE and sop.end > sop.value and size <= CORE_MEMO_MAX:
            rest = b"".join(
                view[e.head : e.end] for e in elements if e.kind == CORE and e is not sop
            )
            original = data[sop.value : sop.end].decode("latin-1").strip(" \x00")
            if original and original.encode("latin-1") not in rest:  # no self-reference
                key = (syntax, rest)
        cached = self.cores.get(key) if key is not None else None
        if cached is not None and sop is not None:
            raw = _raw(data, sop, implicit)
            shift = cached.identity.date_shift_days
            value, remapped = self.memo.transform(raw, shift, charset, remember=False)
            if value is not None:
                return cached.with_sop(self, sop, value, remapped, original, charset, implicit)
        ds = _core(data, elements, undefined, charset, implicit)
        if not can_chunk(ds, syntax):
            return None
        identity = self.anonymizer.anonymize(ds).identity
        sop_class, sop_instance, parts = core_parts(ds, syntax)
        json = self.headers.convert(ds)
        core = _Core(sop_class, sop_instance, parts, json, self.headers.encoding(ds), identity)
        if key is not None and sop is not None:
            self.cores.remember(key, core, sop, original, implicit)
        return core

    def _header(
        self,
        core: _Core,
        elements: list[_Element],
        changed: dict[int, bytes],
        data: bytes,
        charset: RawDataElement | None,
    ) -> dict[str, Any]:
        """The header JSON in the whole-dataset path's order: the file's, then what the
        anonymizer added (the de-identification marks)."""
        headers = self.headers
        core_json = dict(core.json)
        encoding = core.encoding
        out: dict[str, Any] = {}
        for e in elements:
            if e.tag >> 16 == 0x7FE0 or e.kind == DROP:
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
        """The top-level elements from *pos*, classified; the core's elements of undefined
        length as pydicom reads them (or, for a regular sequence, where to read it:
        ``_Unread``); the Specific Character Set. Raises Decline on anything pydicom would
        read differently from a plain walk."""
        size = len(data)
        if size - pos >= 6 and _looks_implicit(data, pos) != implicit:
            raise Decline("pydicom would switch encodings")
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
                head = filemeta.explicit_header(data, pos)
                if head is None:
                    raise Decline("truncated")
                group, number, code, length, value = head
                vr = _VRS.get(code)
                if vr is None:
                    raise Decline("a VR pydicom does not know")
            tag = group << 16 | number
            if tag <= last or group == 0xFFFE:
                raise Decline("elements out of order")
            last = tag
            if length == _UNDEFINED:
                what = DROP if kind(tag, vr) == DROP else CORE
                # An explicit-VR sequence is walked with struct to its end, and read by
                # pydicom only if the core needs it (a core memo miss: ``_core``); anything
                # else of undefined length (encapsulated pixel data, UN, implicit VR, a
                # sequence the walk finds irregular) is read by pydicom's own reader at once,
                # with the dataset's character set for the items, as dcmread would.
                end = skip_sequence(data, value) if vr == "SQ" else None
                if end is None:
                    fp = io.BytesIO(data)
                    fp.seek(pos)
                    element = next(data_element_generator(fp, implicit, True, encoding=encoding))
                    end = fp.tell()
                    if what == CORE:
                        undefined[tag] = element
                elif what == CORE:
                    undefined[tag] = _Unread(pos, encoding)
                out.append(_Element(tag, vr, pos, value, end, what))
            else:
                end = value + length
                if end > size:
                    raise Decline("an element runs past the end")
                # pydicom reads an empty value as None, which the walk and the writer treat
                # apart (converted, written with the dictionary VR): the core's business.
                what = kind(tag, vr)
                if not length and what != DROP:
                    what = CORE
                out.append(_Element(tag, vr, pos, value, end, what))
                if tag == CHARSET:
                    charset = _raw(data, out[-1], implicit)
                    encoding = _encodings(charset)
            pos = end
        if pos != size:
            raise Decline("trailing bytes")
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
            if isinstance(got, _Unread):
                fp = io.BytesIO(data)
                fp.seek(got.pos)
                got = next(data_element_generator(fp, implicit, True, encoding=got.encoding))
            raws[BaseTag(e.tag)] = got if got is not None else _raw(data, e, implicit)
    core = Dataset(raws)
    core.set_original_encoding(implicit, True, _encodings(charset))
    return core


class _Unread(NamedTuple):
    """A sequence of undefined length walked to its end but not read yet: where it starts,
    and the character set in force there (``_core`` reads it if the core memo misses)."""

    pos: int
    encoding: str | list[str]


_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def skip_sequence(data: bytes, pos: int) -> int | None:
    """The end of the explicit-VR little-endian sequence of undefined length whose items
    start at *pos* (just after its sequence delimiter), found without building a dataset;
    None when it is not regular enough to be sure that pydicom's reader would end at the
    same place (the caller then lets pydicom read it).

    Regular: items (``FFFE,E000``) only, each of defined length holding whole elements
    exactly, or of undefined length ending with an item delimiter of length 0; nested
    sequences alike, whatever their length; the sequence delimiter with length 0. Anything
    else of undefined length inside (UN, encapsulated data) is not walked."""
    size = len(data)
    while size - pos >= 8:
        group, number, length = _IMPLICIT(data, pos)
        tag = group << 16 | number
        pos += 8
        if tag == _SEQUENCE_END:
            return pos if length == 0 else None
        if tag != _ITEM:
            return None
        if length == _UNDEFINED:
            end = _skip_elements(data, pos, None)
        elif pos + length > size:
            return None
        else:
            end = _skip_elements(data, pos, pos + length)
        if end is None:
            return None
        pos = end
    return None


def _skip_elements(data: bytes, pos: int, stop: int | None) -> int | None:
    """The end of an item's elements from *pos*: exactly *stop* for an item of defined
    length, else after its item delimiter; None if irregular (``skip_sequence``)."""
    size = len(data) if stop is None else stop
    while size - pos >= 8:
        group, number = _IMPLICIT(data, pos)[:2]
        if group == 0xFFFE:
            if stop is None and group << 16 | number == _ITEM_END and not _LENGTH(data, pos + 4)[0]:
                return pos + 8
            return None
        head = filemeta.explicit_header(data, pos)
        vr = _VRS.get(head[2]) if head is not None else None
        if head is None or vr is None:
            return None
        length, value = head[3], head[4]
        if length == _UNDEFINED:
            if vr != "SQ":
                return None
            end = skip_sequence(data, value)
            if end is None:
                return None
        else:
            end = value + length
        if end > size:
            return None
        if vr == "SQ" and length != _UNDEFINED and _skip_defined(data, value, end) is None:
            return None
        pos = end
    return pos if stop is not None and pos == stop else None


def _skip_defined(data: bytes, pos: int, end: int) -> int | None:
    """*end*, if the sequence of defined length from *pos* to *end* holds whole regular
    items exactly (pydicom reads its items, and would not stop at *end* otherwise)."""
    while pos < end:
        if end - pos < 8:
            return None
        group, number, length = _IMPLICIT(data, pos)
        if group << 16 | number != _ITEM:
            return None
        pos += 8
        if length == _UNDEFINED:
            got = _skip_elements(data, pos, None)
        elif pos + length > end:
            return None
        else:
            got = _skip_elements(data, pos, pos + length)
        if got is None or got > end:
            return None
        pos = got
    return end if pos == end else None


def _looks_implicit(data: bytes, pos: int) -> bool:
    """pydicom's test (``filereader._is_implicit_vr``): a dataset whose first element has no
    two capital letters where an explicit VR would be is read as implicit VR."""
    a, b = data[pos + 4], data[pos + 5]
    return not (0x40 < a < 0x5B and 0x40 < b < 0x5B)
