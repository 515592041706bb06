"""Dates under the Basic Profile (dummies) and Retain Longitudinal Modified Dates (shifts).

With the Modified Dates option every DA and DT value of a patient moves back by the same keyed
number of whole days (``Pseudonymizer.date_shift_days``), so the intervals between a patient's
studies, series and acquisitions are exactly preserved, and a DA-only interval never moves by a
day (shifting by hours, as dicognito does, can). TM values are left as they are: a whole-day
shift does not change a time of day, and a time alone identifies nobody once the date moved.

A value that is not a valid DICOM date cannot be shifted consistently; it is replaced by the
dummy date rather than kept, since keeping it could keep the original.
"""

from __future__ import annotations

import datetime as _dt

#: D ("dummy value consistent with the VR") for date and time VRs.
DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000"}


def _shift_da(value: str, days: int) -> str | None:
    v = value.strip()
    if len(v) != 8 or not v.isdigit():
        return None
    try:
        day = _dt.date(int(v[:4]), int(v[4:6]), int(v[6:8]))
        return (day - _dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def _shift_dt(value: str, days: int) -> str | None:
    v = value.strip()
    # YYYY[MM[DD[HHMMSS[.F]]]][&ZZXX]: only the date part moves; precision and offset are kept.
    if len(v) < 8 or not v[:8].isdigit():
        if len(v) in (4, 6) and v.isdigit():
            return DUMMY["DA"][: len(v)]  # year or year-month alone: too coarse to shift well
        return None
    head = _shift_da(v[:8], days)
    return None if head is None else head + v[8:]


def shift(vr: str, value: str, days: int) -> str:
    """*value* (DA or DT, possibly multi-valued with backslashes) moved back by *days*."""
    fn = _shift_da if vr == "DA" else _shift_dt
    out = []
    for part in value.split("\\"):
        if not part.strip():
            out.append(part)
            continue
        shifted = fn(part, days)
        out.append(DUMMY[vr] if shifted is None else shifted)
    return "\\".join(out)
