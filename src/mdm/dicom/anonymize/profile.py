"""PS3.15 Annex E as data: options, and the per-tag action table compiled from Table E.1-1.

The rows come from ``_table_e1_1`` (generated from the standard's DocBook by
tools/gen_profile.py, never typed by hand). ``Profile.build(options)`` resolves, once per option
set, what the anonymizer does with every tag the table names, so that the per-instance walk is
one dictionary lookup per element and no pattern matching (the recall worker calls it for every
instance it exports).

Resolution rules, in the standard's own words where it has them:

* "A requirement for an Option, when implemented, overrides any requirement for the underlying
  Profile" (PS3.15 E.1.1). When two enabled options disagree on a row (e.g. Retain Device
  Identity says K and Retain Longitudinal Modified Dates says C for Date of Last Calibration),
  C wins over K: the cleaning option is the one that protects, and keeping one real date would
  defeat the date shift of every other one.
* Combined codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) mean "X unless Z, D or U is required to maintain
  IOD conformance". MDM carries no PS3.3 module types, so it takes the branch that is
  conformant in every IOD without keeping any original content: X/Z -> Z, X/D, X/Z/D and
  Z/D -> D, X/Z/U* -> U (keep the sequence, replace every UID inside). Nothing original
  survives any of them; the file stays valid whatever the attribute's type is.
  One exception: an empty *sequence* is invalid where the sequence is Type 3 (dciodvfy: "Bad
  Sequence number of Items 0"), so X/Z on a sequence means X, except for the sequences PS3.3
  makes Type 2 (``TYPE2_SEQUENCES``), which become empty (Z).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final

from pydicom.datadict import dictionary_VR

from mdm.dicom.anonymize import _table_e1_1 as table
from mdm.errors import UsageError

#: Option switch name -> Table E.1-1 column and CID 7050 code (PS3.16) with its meaning.
OPTION_CODES: Final[dict[str, tuple[str, str]]] = {
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_long_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
}
BASIC_CODE: Final = ("113100", "Basic Application Confidentiality Profile")

#: Resolved actions (single letters, after the combined codes are decided).
REMOVE, EMPTY, DUMMY, KEEP, CLEAN, UID = "X", "Z", "D", "K", "C", "U"
_COMBINED: Final[dict[str, str]] = {
    "X/Z": EMPTY,
    "X/D": DUMMY,
    "X/Z/D": DUMMY,
    "Z/D": DUMMY,
    "X/Z/U*": UID,
}
#: X/Z sequences that PS3.3 defines as Type 2 (Acquisition Context Module, C.7.6.14).
TYPE2_SEQUENCES: Final = frozenset({0x00400555})
_TAG = re.compile(r"^\(([0-9A-F]{4}),([0-9A-F]{4})\)$")


@dataclass(frozen=True)
class Options:
    """The Basic Profile plus the PS3.15 E.3 options, each a switch (all off = Basic only).

    ``allow_burned_in_sop_classes`` lists SOP Class UIDs the site accepts although they commonly
    carry burned-in text (e.g. its ultrasound has been checked); BurnedInAnnotation = YES is
    refused whatever this says, because Clean Pixel Data is not implemented.
    """

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    allow_burned_in_sop_classes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise UsageError(
                "retain_long_full_dates and retain_long_modified_dates exclude each other"
            )
        object.__setattr__(
            self, "allow_burned_in_sop_classes", frozenset(self.allow_burned_in_sop_classes)
        )

    @classmethod
    def from_names(
        cls, names: tuple[str, ...] | list[str], allow_sop_classes: tuple[str, ...] = ()
    ) -> Options:
        """Options from switch names (``retain-uids`` or ``retain_uids``); unknown names fail."""
        flags: dict[str, bool] = {}
        for raw in names:
            name = raw.strip().lower().replace("-", "_")
            if name not in OPTION_CODES:
                known = ", ".join(n.replace("_", "-") for n in OPTION_CODES)
                raise UsageError(f"unknown anonymization option {raw!r}; known: {known}")
            flags[name] = True
        return cls(**flags, allow_burned_in_sop_classes=frozenset(allow_sop_classes))

    def enabled(self) -> tuple[str, ...]:
        """Enabled option names, in Table E.1-1 column order."""
        return tuple(n for n in OPTION_CODES if getattr(self, n))

    def cache_key(self) -> tuple[object, ...]:
        return dataclasses.astuple(self)


def _resolve(row: tuple[str, ...], options: Options, tag: int | None = None) -> str:
    """The action for one row under *options* (rules in the module docstring)."""
    action = row[4]
    if action == "X/Z" and tag is not None and tag not in TYPE2_SEQUENCES and _is_sequence(tag):
        action = "X"
    overrides = {row[i] for i, col in enumerate(table.COLUMNS) if i > 4 and row[i]}
    if overrides:
        chosen = [
            row[i]
            for i, col in enumerate(table.COLUMNS)
            if i > 4 and row[i] and getattr(options, col)
        ]
        if chosen:
            action = CLEAN if CLEAN in chosen else chosen[0]
    return _COMBINED.get(action, action)


def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


@dataclass(frozen=True)
class Profile:
    """Actions for one option set, ready for the per-instance walk.

    ``actions`` maps every single-tag row to its resolved action; ``curve_action`` and
    ``overlay_action`` are the repeating-group rows (50xx,xxxx) and (60xx,3000)/(60xx,4000);
    ``private_action`` is the "(gggg,eeee) where gggg is odd" row; ``safe_private`` holds the
    Table E.3.10-1 entries as (group, creator in lower case, element offset).
    """

    options: Options
    actions: dict[int, str]
    curve_action: str
    overlay_action: str
    overlay_comments_action: str
    private_action: str
    safe_private: frozenset[tuple[int, str, int]]
    edition: str = table.EDITION

    @classmethod
    def build(cls, options: Options | None = None) -> Profile:
        options = options or Options()
        actions: dict[int, str] = {}
        special: dict[str, str] = {}
        for row in table.ROWS:
            m = _TAG.match(row[1])
            if m:
                tag = int(m.group(1) + m.group(2), 16)
                actions[tag] = _resolve(row, options, tag)
            else:
                special[row[1]] = _resolve(row, options)
        expected = {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)", "(gggg,eeee) where gggg is odd"}
        if set(special) != expected:
            raise RuntimeError(f"Table E.1-1 rule rows changed: {sorted(special)}")
        safe = frozenset(
            (int(elem[1:5], 16), creator.strip().lower(), int(elem[8:10], 16))
            for elem, creator, *_ in table.SAFE_PRIVATE
        )
        return cls(
            options=options,
            actions=actions,
            curve_action=special["(50xx,xxxx)"],
            overlay_action=special["(60xx,3000)"],
            overlay_comments_action=special["(60xx,4000)"],
            private_action=special["(gggg,eeee) where gggg is odd"],
            safe_private=safe,
        )

    def method_description(self) -> list[str]:
        """DeidentificationMethod (0012,0063) values, each within LO's 64 characters."""
        names = [OPTION_CODES[n][1] for n in self.options.enabled()]
        return [f"MDM PS3.15 {self.edition} Table E.1-1", BASIC_CODE[1], *names]

    def method_codes(self) -> list[tuple[str, str]]:
        """(code value, meaning) for DeidentificationMethodCodeSequence, CID 7050."""
        return [BASIC_CODE, *(OPTION_CODES[n] for n in self.options.enabled())]
