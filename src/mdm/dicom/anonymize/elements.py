"""The anonymizer element by element, for a caller that reads the instance's bytes itself.

The recall worker anonymizes every instance it recalls, and most of a CT header is either
left alone by Table E.1-1 (geometry, acquisition parameters, Pixel Data) or changed in a way
that depends on the element's value alone (a date emptied, a UID remapped, a station name
replaced by its keyed dummy), the same way for every instance of a series. Building pydicom
elements for all of them, walking them and writing them again was most of the worker's
Python time (docs/recall.md, "Throughput, seventh round"). ``ElementPlan`` sorts the
top-level elements of an instance into four kinds:

* ``PASS``: the walk never changes nor reads it: its bytes go out as they came in;
* ``DROP``: the walk removes it whatever it holds: X in the table, and every private element
  unless Retain Safe Private keeps some; never decoded;
* ``MEMO``: the walk changes it by its value alone (``ElementMemo``: the result of the real
  walk over that one element, remembered per value);
* ``CORE``: the element needs the whole dataset, or is read to build the identity record:
  sequences, overlays and curves, the identifying attributes, the SOP Class and Instance,
  the Specific Character Set, the de-identification marks, private elements under Retain
  Safe Private (their creators), empty values, anything whose VR is unknown, ambiguous or
  not a string. The caller puts these in a small dataset and gives it to
  ``Anonymizer.anonymize`` as usual.

There is one rule set, the walker's: a MEMO result *is* the walker's result on a dataset
holding only that element, and whenever the walk leaves something other than a raw value
(``Decline``), the tag becomes CORE for good. Options that scrub free text of the instance's
own identifiers (Clean Descriptors and the like) make every text depend on other elements;
with them the plan declines (``usable`` is False). The equivalence with the whole-dataset
walk is tested on the corpus and on pydicom's test files (tests/unit/workers).
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from mdm.dicom.anonymize import (
    _CONDITIONAL,
    _IDENTITY_TAGS,
    Anonymizer,
    burned_in,
    captured_warnings,
)
from mdm.dicom.anonymize.handlers import _STRING_VRS, _UNDEFINED, _generic_kind, _Instance
from mdm.dicom.anonymize.profile import KEEP, REMOVE
from mdm.memo import Memo

PASS, MEMO, CORE, DROP = 0, 1, 2, 3

CHARSET = 0x00080005
SOP_CLASS = 0x00080016
SOP_INSTANCE = 0x00080018
#: What pydicom reads to settle an ambiguous VR (US or SS, OB or OW) in an implicit VR dataset
#: (``filewriter.correct_ambiguous_vr_element``): with the ambiguous elements in the core.
AMBIGUITY_CONTEXT = frozenset({0x00280100, 0x00280103, 0x00283002, 0x54001004})
#: The de-identification marks (``Anonymizer._mark``): set on every output, whatever came in.
MARKS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})


class Decline(Exception):
    """The element (or the instance) is not for the element-wise path: take the whole one.
    Its text is a fixed reason or a tag, never a value (it is logged)."""


class ElementPlan:
    """Which kind (``PASS``, ``DROP``, ``MEMO``, ``CORE``) each top-level element is, for one
    anonymizer; thread-safe (a dictionary per VR seen)."""

    def __init__(self, anonymizer: Anonymizer) -> None:
        self.anonymizer = anonymizer
        self.usable = not anonymizer._scrubbing
        self._actions = anonymizer.profile.actions
        # Without Retain Safe Private the walk removes every private element, whatever it holds.
        self._drop_private = anonymizer._walker.safe_private is None
        self._core = frozenset(
            {CHARSET, SOP_CLASS, SOP_INSTANCE}
            | set(_IDENTITY_TAGS.values())
            | set(_CONDITIONAL) | set(_CONDITIONAL.values())
            | {burned_in._BURNED_IN, burned_in._VISUAL}
            | MARKS
        )  # fmt: skip
        self._kinds: dict[tuple[int, str | None], int] = {}

    def kind(self, tag: int, vr: str | None) -> int:
        """The kind of top-level element *tag* read with VR *vr* (None: implicit VR); DROP
        means the walk removes it whatever it holds (X, and private elements unless Retain
        Safe Private keeps some)."""
        kind = self._kinds.get((tag, vr))
        if kind is None:
            kind = self._kinds[(tag, vr)] = self._classify(tag, vr)
        return kind

    def demote(self, tag: int, vr: str | None) -> None:
        """*tag* proved to need the whole dataset (see ``Decline``): CORE from now on."""
        self._kinds[(tag, vr)] = CORE

    def _classify(self, tag: int, vr: str | None) -> int:
        group, number = tag >> 16, tag & 0xFFFF
        if group & 1:
            return DROP if self._drop_private else CORE  # safe ones: their creator decides
        if tag in self._core or number == 0 or group <= 0x0006:
            return CORE  # identity, marks, group lengths, file meta/command groups
        if group & 0xFF00 in (0x5000, 0x6000) and group & 0xFF <= 0x1E:
            return CORE  # curves and overlays: a whole group at a time
        if self._actions.get(tag) == REMOVE:
            return DROP  # X: removed whatever its value, VR or length
        if vr is None and tag in AMBIGUITY_CONTEXT:
            return CORE
        if vr is None or vr == "UN":
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return CORE
            if " or " in vr:
                return CORE  # ambiguous: pydicom decides with the rest of the dataset
        if vr == "SQ":
            return CORE
        action = self._actions.get(tag)
        if action is None:
            generic = _generic_kind(tag)
            if generic in ("keep", "keepuid"):
                return PASS
            if generic == "uid" and vr in _STRING_VRS:
                return MEMO
            return CORE
        if action == KEEP:
            return PASS
        return MEMO if vr in _STRING_VRS else CORE


#: The longest value ``ElementMemo`` remembers (names, dates, UIDs, codes are far shorter).
MEMO_VALUE_MAX = 1024


class ElementMemo:
    """The walk's result for one MEMO element, remembered per (tag, VR, value, date shift,
    character set, encoding): most values repeat across the instances of a series.

    ``transform`` returns the new value (bytes, or None when the element is removed) and the
    UIDs it remapped. At most *limit* entries (``mdm.memo.Memo``).
    """

    def __init__(self, anonymizer: Anonymizer, plan: ElementPlan, limit: int = 100_000) -> None:
        self._anonymizer = anonymizer
        self._plan = plan
        self._memo: Memo[tuple[Any, ...], tuple[bytes | None, tuple[tuple[str, str], ...]]] = Memo(
            limit
        )

    def transform(
        self,
        raw: RawDataElement,
        shift: int | None,
        charset: RawDataElement | None,
        *,
        remember: bool = True,
    ) -> tuple[bytes | None, tuple[tuple[str, str], ...]]:
        """*remember* False: a value that will not come again (a SOP Instance UID). Values
        longer than ``MEMO_VALUE_MAX`` are not remembered either (a long text would hold its
        memory for nothing)."""
        if not remember or raw.length > MEMO_VALUE_MAX:
            return self._walk(raw, shift, charset)
        key = (
            int(raw.tag),
            raw.VR,
            raw.value,
            shift,
            charset.value if charset is not None else None,
            raw.is_implicit_VR,
        )
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        result = self._walk(raw, shift, charset)
        self._memo.put(key, result)
        return result

    def _walk(
        self, raw: RawDataElement, shift: int | None, charset: RawDataElement | None
    ) -> tuple[bytes | None, tuple[tuple[str, str], ...]]:
        ds = Dataset()
        if charset is not None:
            ds._dict[BaseTag(CHARSET)] = charset
        tag = BaseTag(raw.tag)
        ds._dict[tag] = raw
        # The patient key only names the patient's own pseudonyms, which are CORE elements.
        inst = _Instance(patient_key="", shift_days=shift)
        with captured_warnings():  # the value is an original one: never shown
            self._anonymizer._walker.walk(ds, inst)
        out = ds._dict.get(tag)
        if out is None:
            value = None
        elif type(out) is RawDataElement and type(out.value) is bytes:
            if out.length == _UNDEFINED or out.VR != raw.VR:
                self._plan.demote(raw.tag, raw.VR)
                raise Decline(f"{raw.tag:08X}")
            value = out.value
        else:
            self._plan.demote(raw.tag, raw.VR)
            raise Decline(f"{raw.tag:08X}")
        return value, tuple(inst.uids.items())
