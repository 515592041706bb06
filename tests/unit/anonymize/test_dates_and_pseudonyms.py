"""Keyed date shifts keep intervals; keyed pseudonyms are stable, distinct and secret-bound."""

from __future__ import annotations

import datetime as dt

import pytest

from mdm.dicom.anonymize import dates
from mdm.dicom.anonymize.pseudonyms import MAX_SHIFT_DAYS, Pseudonymizer
from tests.unit.anonymize.conftest import SECRET, make_ct


def _day(value: str) -> dt.date:
    return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_shift_moves_whole_days_and_keeps_precision() -> None:
    assert dates.shift("DA", "20200301", 1) == "20200229"
    assert dates.shift("DT", "20200301123456.789+0100", 1) == "20200229123456.789+0100"
    assert dates.shift("DA", "20200301\\20200302", 2) == "20200228\\20200229"
    assert dates.shift("DA", "not-a-date", 5) == "19000101"  # never kept
    assert dates.shift("DT", "2020", 5) == "1900"


def test_modified_dates_keep_intervals_within_a_patient(anonymizer) -> None:
    a = anonymizer(retain_long_modified_dates=True)
    first, second = make_ct(), make_ct(sop="1.2.3.4.2")
    second.StudyDate = "20200402"
    second.AcquisitionDateTime = "20200402101010"
    r1, r2 = a.anonymize(first), a.anonymize(second)
    assert r1.identity.date_shift_days == r2.identity.date_shift_days
    assert 1 <= r1.identity.date_shift_days <= MAX_SHIFT_DAYS
    assert (_day(second.StudyDate) - _day(first.StudyDate)).days == 91
    assert second.AcquisitionDateTime[:8] == second.StudyDate
    assert first.StudyDate != "20200102"


def test_different_patients_get_different_shifts_and_pseudonyms() -> None:
    p = Pseudonymizer(SECRET)
    keys = [f"id\x00\x00PID{i}" for i in range(200)]
    shifts = {p.date_shift_days(k) for k in keys}
    assert len(shifts) > 150  # keyed, spread over ten years
    ids = {p.patient_id(k) for k in keys}
    assert len(ids) == 200


def test_pseudonyms_are_deterministic_and_keyed() -> None:
    a, b = Pseudonymizer(SECRET), Pseudonymizer(SECRET)
    other = Pseudonymizer(b"x" * 32)
    assert a.uid("1.2.3") == b.uid("1.2.3") != other.uid("1.2.3")
    assert a.uid("1.2.3") == a.uid("1.2.3\x00")  # padding does not matter
    assert a.patient_id("k") == b.patient_id("k") != other.patient_id("k")
    assert a.person_name("DOE^J") != a.person_name("DOE^K")
    # separate sub-keys: the same string gives unrelated pseudonyms per purpose
    assert a.text("1.2.3", 26) not in a.uid("1.2.3")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"too short")
