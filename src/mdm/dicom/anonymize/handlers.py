"""The walk: apply the resolved Table E.1-1 actions to every element at every depth.

One ``Walker`` exists per (profile, secret); one ``_Instance`` per anonymized dataset holds
what is specific to a patient (date shift, identifiers to scrub). The per-element cost is one
dictionary lookup; elements the table does not name and whose dictionary VR is neither UI nor SQ
are not even decoded from their raw bytes, which keeps the walk close to plain read+write speed.

How each code is carried out (PS3.15 Table E.1-1a; combined codes are resolved in profile.py):

* X removes the element (and a sequence with all its items).
* Z empties it (a sequence keeps zero items), except Patient's Name, which gets the keyed patient
  pseudonym (Z allows a dummy value and the vault needs a stable one).
* D gives a dummy consistent with the VR: keyed pseudonyms for names, IDs and texts (the same
  original always gives the same dummy, so nothing needed for linkage is lost), a fixed dummy
  date, a remapped UID. A D sequence keeps its items but every free-text, person-name, date and
  UID inside is replaced in turn ("content" mode); coded entries (code value, scheme, meaning)
  survive so an SR tree stays well-formed, unless the D sequence is itself a code sequence
  (e.g. Person Identification Code Sequence), where the code values are identifiers.
* K keeps a value; a K sequence is walked again with the same rules (E.1-1a: "cleaned").
* C cleans: dates are shifted (Modified Dates), AE titles replaced by keyed dummies, free text
  scrubbed of this instance's own identifiers, sequences walked in "clean" mode.
* U replaces a UID with its keyed ``2.25.`` pseudonym. Any other UI element outside the table
  is remapped too unless its value is a DICOM-defined UID (1.2.840.10008...) or it names a
  class, transfer syntax or coding scheme, so references stay consistent (PS3.15 E.1.1 note on
  extensibility).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from mdm.dicom.anonymize import dates
from mdm.dicom.anonymize.profile import CLEAN, DUMMY, EMPTY, KEEP, REMOVE, UID, Profile
from mdm.dicom.anonymize.pseudonyms import Pseudonymizer
from mdm.errors import InvalidDicom, MDMError

NORMAL, CLEANING, CONTENT, STRICT = 0, 1, 2, 3

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
_TIMEZONE = 0x00080201
_OFFSET = re.compile(r"^[+-]\d{4}$")
_DICOM_ROOT = "1.2.840.10008."
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "UR"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
_UNDEFINED = 0xFFFFFFFF
_MAXLEN = {"SH": 16, "CS": 16, "AE": 16, "LO": 64, "UC": 64, "PN": 64}
#: Coded-entry attributes kept inside a D (content) sequence: PS3.3 Table 8.8-1.
_CODED_ENTRY = frozenset(
    {0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080119, 0x00080120, 0x00080105}
    | {0x0008010F, 0x00080106, 0x0040A040, 0x0040A010}
)


def _generic_kind(tag: int) -> str:
    """For tags outside the table: 'uid' (remap), 'keepuid', 'sq', 'keep' or '?' (unknown)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "?"
    if vr == "SQ":
        return "sq"
    if vr == "UI":
        kw = dictionary_keyword(tag)
        if kw.endswith(("ClassUID", "TransferSyntaxUID", "SchemeUID", "ClassUIDs")):
            return "keepuid"
        return "uid"
    return "keep"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


@dataclass
class _Instance:
    """What one dataset's walk needs to know about its patient."""

    patient_key: str
    shift_days: int | None
    scrub: re.Pattern[str] | None = None
    uids: dict[str, str] = field(default_factory=dict)


class Walker:
    """Applies one Profile under one secret; build once, call ``walk`` per instance."""

    def __init__(self, profile: Profile, pseudo: Pseudonymizer) -> None:
        self.profile = profile
        self.pseudo = pseudo
        self.actions = profile.actions
        opts = profile.options
        self.retain_uids = opts.retain_uids
        self.full_dates = opts.retain_long_full_dates
        self.modified_dates = opts.retain_long_modified_dates
        self.safe_private = profile.safe_private if profile.private_action == CLEAN else None
        self.safe_creators = frozenset((g, c) for g, c, _ in profile.safe_private)
        self._kinds: dict[int, str] = {}
        self._vrs: dict[int, str] = {}
        self._do: dict[str, Callable[[Dataset, int, _Instance, int], None]] = {
            REMOVE: self._remove,
            EMPTY: self._empty,
            DUMMY: self._dummy,
            KEEP: self._keep,
            CLEAN: self._clean,
            UID: self._uid,
        }

    # -- the walk ---------------------------------------------------------------------------

    def walk(self, ds: Dataset, inst: _Instance, mode: int = NORMAL) -> None:
        actions = self.actions
        kinds = self._kinds
        for tag in list(ds.keys()):
            try:
                group = tag >> 16
                if group & 1:
                    self._private(ds, tag, group, inst)
                    continue
                action = actions.get(tag)
                if action is not None:
                    self._do[action](ds, tag, inst, mode)
                    continue
                if group & 0xFF00 in (0x5000, 0x6000) and group & 0xFF <= 0x1E:
                    self._repeating(ds, tag, group, inst)
                    continue
                kind = kinds.get(tag)
                if kind is None:
                    kind = kinds[tag] = _generic_kind(tag)
                if kind == "keep" and mode == NORMAL:
                    continue
                self._outside(ds, tag, kind, inst, mode)
            except MDMError:
                raise
            except Exception as exc:  # a value pydicom cannot decode: name the element only
                raise InvalidDicom(
                    f"cannot anonymize element ({tag >> 16:04X},{tag & 0xFFFF:04X}): "
                    f"{type(exc).__name__}",
                    tag=f"({tag >> 16:04X},{tag & 0xFFFF:04X})",
                ) from exc

    def _outside(self, ds: Dataset, tag: int, kind: str, inst: _Instance, mode: int) -> None:
        """An element the table does not name."""
        elem, vr = self._get(ds, tag)
        if vr == "SQ":
            self._items(elem, inst, mode)
        elif vr == "UI":
            if kind != "keepuid":
                self._remap(ds, elem, vr, inst)
        elif mode == NORMAL or vr in ("UN", "OB", "OW", "OD", "OF", "OL", "OV"):
            return
        elif mode in (CONTENT, STRICT):
            if mode == CONTENT and tag in _CODED_ENTRY:
                return
            if vr in _TEXT_VRS or (mode == STRICT and vr == "CS"):
                self._dummy(ds, tag, inst, mode)
            elif vr in _DATE_VRS:
                self._date(ds, elem, vr, inst, DUMMY)
        elif mode == CLEANING:
            if vr in _TEXT_VRS:
                self._scrub(ds[tag], inst)
            elif vr in _DATE_VRS:
                self._date(ds, elem, vr, inst, CLEAN)

    # -- element access: raw bytes when possible ------------------------------------------------

    def _get(self, ds: Dataset, tag: int) -> tuple[Any, str]:
        """(element, VR). A string element straight from the file stays a RawDataElement, so
        replacing it costs no decoding, validation or re-encoding by pydicom (the recall worker
        pays this per instance); sequences and binary VRs are converted as usual."""
        elem = ds.get_item(tag)
        if type(elem) is RawDataElement:
            vr = elem.VR
            if vr is None or vr == "UN":
                vr = self._vr(tag)
            if vr in _STRING_VRS and type(elem.value) is bytes and elem.length != _UNDEFINED:
                return elem, vr
            elem = ds[tag]
        return elem, elem.VR

    def _vr(self, tag: int) -> str:
        vr = self._vrs.get(tag)
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
            self._vrs[tag] = vr
        return vr

    @staticmethod
    def _put(ds: Dataset, elem: Any, vr: str, value: str | bytes | None) -> None:
        """Set a new value, in raw form (padded to even length) if the element is raw."""
        if type(elem) is RawDataElement:
            if value is None:
                data = b""
            elif isinstance(value, str):
                data = value.encode("ascii")
            else:
                data = value
            if len(data) & 1:
                data += b"\x00" if vr in ("UI", "OB", "UN") else b" "
            # Straight into the element dict: Dataset.__setitem__ re-derives the tag and checks
            # for private creators and pixel data, none of which a public string element is.
            ds._dict[elem.tag] = elem._replace(value=data, length=len(data))
        else:
            elem.value = value

    @staticmethod
    def _str(elem: Any) -> str:
        if type(elem) is RawDataElement:
            return elem.value.decode("latin-1").strip(" \x00") if elem.value else ""
        return _text(elem.value).strip(" \x00")

    def _items(self, elem: DataElement, inst: _Instance, mode: int) -> None:
        for item in elem.value or ():
            self.walk(item, inst, mode)

    def _private(self, ds: Dataset, tag: int, group: int, inst: _Instance) -> None:
        """Private attributes: removed, except Table E.3.10-1 entries under Safe Private."""
        safe = self.safe_private
        elem_no = tag & 0xFFFF
        if safe is not None and elem_no >= 0x10:
            if elem_no <= 0xFF:  # a private creator: kept while its block holds safe elements
                creator = _text(ds[tag].value).strip().lower()
                if (group, creator) in self.safe_creators:
                    return
            else:
                creator_tag = (group << 16) | (elem_no >> 8)
                if creator_tag in ds:
                    creator = _text(ds[creator_tag].value).strip().lower()
                    if (group, creator, elem_no & 0xFF) in safe:
                        elem = ds[tag]
                        if elem.VR == "SQ":
                            self._items(elem, inst, NORMAL)
                        return
        if 0x10 <= elem_no <= 0xFF:
            del ds[tag]  # a private creator: pydicom's block cache must hear of it
        else:
            _drop(ds, tag)

    def _repeating(self, ds: Dataset, tag: int, group: int, inst: _Instance) -> None:
        """(50xx,xxxx) curves; (60xx,3000) overlay data and (60xx,4000) overlay comments.

        Bitmaps cannot be cleaned, so Overlay Data goes whatever the option (Clean Graphics
        included), and with it the whole overlay group: an Overlay Plane module without its
        Type 1 Overlay Data would make the file invalid. Curves go as a whole group.
        """
        if tag not in ds:  # already gone with its overlay group
            return
        if group & 0xFF00 == 0x5000:
            if self.profile.curve_action != KEEP:
                del ds[tag]
            return
        if (group << 16 | 0x3000) in ds and self.profile.overlay_action != KEEP:
            # Dataset iterates elements, keys() gives the tags
            for t in [t for t in ds.keys() if t >> 16 == group]:  # noqa: SIM118
                del ds[t]
        elif tag & 0xFFFF == 0x4000:
            if self.profile.overlay_comments_action == CLEAN:
                self._scrub(ds[tag], inst)
            elif self.profile.overlay_comments_action != KEEP:
                del ds[tag]

    # -- actions ----------------------------------------------------------------------------

    def _remove(self, ds: Dataset, tag: int, inst: _Instance, mode: int) -> None:
        _drop(ds, tag)

    def _keep(self, ds: Dataset, tag: int, inst: _Instance, mode: int) -> None:
        elem = ds.get_item(tag)
        vr = elem.VR if elem is not None else None
        if vr is None or vr == "UN":
            vr = self._vr(tag)
        if vr == "SQ":  # K on a sequence: walk it with the same rules; values stay raw
            self._items(ds[tag], inst, mode)

    def _empty(self, ds: Dataset, tag: int, inst: _Instance, mode: int) -> None:
        elem, vr = self._get(ds, tag)
        if tag == PATIENT_NAME:
            self._put(ds, elem, vr, self.pseudo.patient_name(inst.patient_key))
        elif vr == "SQ":
            elem.value = Sequence()
        else:
            self._put(ds, elem, vr, None)

    def _dummy(self, ds: Dataset, tag: int, inst: _Instance, mode: int) -> None:
        elem, vr = self._get(ds, tag)
        pseudo = self.pseudo
        if tag == PATIENT_ID:
            self._put(ds, elem, vr, pseudo.patient_id(inst.patient_key))
        elif tag == PATIENT_NAME:
            self._put(ds, elem, vr, pseudo.patient_name(inst.patient_key))
        elif vr == "SQ":
            kw = _keyword(tag)
            self._items(elem, inst, STRICT if kw.endswith("CodeSequence") else CONTENT)
        elif vr == "UI":
            self._remap(ds, elem, vr, inst)
        elif vr in _DATE_VRS:
            self._date(ds, elem, vr, inst, DUMMY)
        elif vr == "PN":
            original = self._str(elem)
            self._put(ds, elem, vr, pseudo.person_name(original) if original else None)
        elif vr in ("LO", "SH", "CS", "AE", "UC", "ST", "LT", "UT"):
            original = self._str(elem)
            size = _MAXLEN.get(vr, 26)
            self._put(ds, elem, vr, pseudo.text(original, size) if original else None)
        elif vr == "UR":
            self._put(ds, elem, vr, "urn:x-mdm:" + pseudo.text(self._str(elem), 26))
        elif vr == "AS":
            self._put(ds, elem, vr, "000D")
        elif vr in ("IS", "DS"):
            self._put(ds, elem, vr, "0")
        elif vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
            elem.value = b"\x00\x00"
        else:  # binary numbers (US, SS, UL, SL, FL, FD, AT, ...): zero is a valid dummy
            elem.value = 0

    def _clean(self, ds: Dataset, tag: int, inst: _Instance, mode: int) -> None:
        elem, vr = self._get(ds, tag)
        if vr == "SQ":
            self._items(elem, inst, CLEANING)
        elif vr in _DATE_VRS:
            self._date(ds, elem, vr, inst, CLEAN)
        elif tag == _TIMEZONE:  # kept with the dates, but only if it is an offset and no more
            if not _OFFSET.match(self._str(elem)):
                self._put(ds, elem, vr, "+0000")
        elif vr == "AE":
            value = self._str(elem)
            self._put(ds, elem, vr, self.pseudo.text("ae\x00" + value, 16) if value else None)
        elif vr == "PN":
            original = self._str(elem)
            self._put(ds, elem, vr, self.pseudo.person_name(original) if original else None)
        elif vr in _TEXT_VRS:
            self._scrub(ds[tag], inst)
        elif vr == "UN":
            del ds[tag]  # unknown VR: cannot clean what cannot be read
        else:  # binary timestamps and the like: nothing to clean in place, so a dummy (D)
            self._dummy(ds, tag, inst, mode)

    def _uid(self, ds: Dataset, tag: int, inst: _Instance, mode: int) -> None:
        elem, vr = self._get(ds, tag)
        if vr == "SQ":  # X/Z/U*: keep the references, replace the UIDs inside
            self._items(elem, inst, mode)
        elif vr in ("UI", "UN") or type(elem) is RawDataElement:
            self._remap(ds, elem, vr, inst)
        else:
            self._dummy(ds, tag, inst, mode)

    # -- value helpers ----------------------------------------------------------------------

    def _map_uid(self, value: str, inst: _Instance) -> str:
        if self.retain_uids or value.startswith(_DICOM_ROOT):
            return value
        new = self.pseudo.uid(value)
        inst.uids[value] = new
        return new

    def _remap(self, ds: Dataset, elem: Any, vr: str, inst: _Instance) -> None:
        if type(elem) is RawDataElement or vr == "UN" or isinstance(elem.value, bytes):
            raw = elem.value
            text = raw.decode("ascii", "replace").strip(" \x00") if raw else ""
            if not text:
                return
            new = "\\".join(self._map_uid(v.strip(" \x00"), inst) for v in text.split("\\"))
            if type(elem) is RawDataElement:
                self._put(ds, elem, "UI", new)
            else:
                data = new.encode("ascii")
                elem.value = data + b"\x00" * (len(data) & 1)
            return
        value = elem.value
        if not value:
            return
        if isinstance(value, str):
            elem.value = self._map_uid(value.strip(" \x00"), inst)
        else:
            elem.value = [self._map_uid(str(v).strip(" \x00"), inst) for v in value]

    def _date(self, ds: Dataset, elem: Any, vr: str, inst: _Instance, action: str) -> None:
        value = self._str(elem)
        if not value:
            return
        if action == CLEAN and self.full_dates:
            return
        if action == CLEAN and inst.shift_days is not None and vr in ("DA", "DT"):
            self._put(ds, elem, vr, dates.shift(vr, value, inst.shift_days))
        elif action == CLEAN and vr == "TM" and inst.shift_days is not None:
            return
        else:
            self._put(ds, elem, vr, dates.DUMMY[vr])

    def _scrub(self, elem: DataElement, inst: _Instance) -> None:
        value = _text(elem.value)
        if value and inst.scrub is not None:
            cleaned = inst.scrub.sub("***", value)
            if cleaned != value:
                elem.value = cleaned


def _drop(ds: Dataset, tag: int) -> None:
    """Remove an element that is neither pixel data nor a private creator.

    ``del ds[tag]`` costs ~15 us in pydicom 3.0 (it compares the tag with the pixel keywords
    through Python-level ``__eq__``), and a Siemens header has hundreds of private elements;
    for such elements it only deletes the dict entry, so the element dict is used directly."""
    del ds._dict[tag]  # type: ignore[arg-type]


def _keyword(tag: int) -> str:
    try:
        return dictionary_keyword(tag)
    except KeyError:
        return ""
