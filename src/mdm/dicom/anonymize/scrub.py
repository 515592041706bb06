"""Clean Descriptors: scrub an instance's own identifiers out of the free text an option keeps.

Options with C on text (Clean Descriptors, Clean Structured Content, Clean Graphics, Retain
Patient Characteristics) keep descriptions "cleaned" rather than removed. What MDM can clean
reliably is what the instance itself says about identity: the values of the patient's name
parts, IDs, accession number, birth date (in four common spellings), address, institution and
every other person name of the table. One regex of those tokens is built per instance, only when
such an option is on; the Basic Profile path never uses a regex.
"""

from __future__ import annotations

import re

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from mdm.dicom.anonymize import _table_e1_1 as table
from mdm.dicom.anonymize.handlers import PATIENT_NAME, _text

#: Identifying attributes whose values Clean Descriptors scrubs out of retained free text.
_SCRUB_SOURCES = (
    0x00100020, 0x00101000, 0x00100021, 0x00080050, 0x00100030, 0x00101040,
    0x00102154, 0x00080080, 0x00080081, 0x00081040, 0x00200010, 0x00380010,
    0x00101090, 0x00101005, 0x00101060, 0x00101001,
)  # fmt: skip


def scrub_pattern(ds: Dataset) -> re.Pattern[str] | None:
    """One regex of this instance's own identifiers, for Clean Descriptors (built per instance
    only when a cleaning option is on; the Basic Profile path never uses a regex)."""
    tokens: set[str] = set()
    for tag in (PATIENT_NAME, *_SCRUB_SOURCES):
        if tag not in ds:
            continue
        value = _text(ds[tag].value).strip()
        if not value:
            continue
        tokens.add(value)
        for part in re.split(r"[\s^\\,]+", value):
            if len(part) >= 3:
                tokens.add(part)
        if tag == 0x00100030 and len(value) == 8 and value.isdigit():
            y, m, d = value[:4], value[4:6], value[6:]
            tokens |= {f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"}
    for tag in list(ds.keys()):
        if tag in _PN_TABLE_TAGS and tag != PATIENT_NAME:
            for part in re.split(r"[\s^\\,=]+", _text(ds[tag].value)):
                if len(part) >= 3:
                    tokens.add(part)
    if not tokens:
        return None
    ordered = sorted(tokens, key=lambda t: (-len(t), t))
    # Whole words only: "Ann" is scrubbed, "annual" is not.
    alternatives = "|".join(re.escape(t) for t in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _table_pn_tags() -> frozenset[int]:
    out = set()
    for row in table.ROWS:
        tag = row[1]
        if len(tag) == 11 and "x" not in tag:
            value = int(tag[1:5] + tag[6:10], 16)
            try:
                if dictionary_VR(value) == "PN":
                    out.add(value)
            except KeyError:
                continue
    return frozenset(out)


_PN_TABLE_TAGS = _table_pn_tags()
