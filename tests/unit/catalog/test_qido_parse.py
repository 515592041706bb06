"""QIDO-RS parameter parsing without a database: what each value turns into."""

from __future__ import annotations

import pytest

from mdm.catalog import qido
from mdm.errors import UsageError


def one(level: qido.Level, key: str, value: str) -> qido.Filter:
    (f,) = qido.parse(level, [(key, value)]).filters
    return f


def test_wildcards_become_escaped_like_patterns() -> None:
    assert qido.like_pattern("DOE*") == "DOE%"
    assert qido.like_pattern("A?C") == "A_C"
    assert qido.like_pattern("50%_off*") == "50\\%\\_off%"
    assert qido.like_pattern("a\\b*") == "a\\\\b%"


def test_each_value_form_selects_its_matching_type() -> None:
    assert one("study", "PatientID", "PSN-1").kind == "single"
    assert one("study", "PatientID", "").kind == "universal"
    assert one("study", "PatientID", "*").kind == "universal"
    assert one("study", "PatientID", "PSN*").kind == "wildcard"
    assert one("study", "StudyInstanceUID", "1.2,1.3").values == ("1.2", "1.3")
    assert one("study", "0020000D", "1.2\\1.3").kind == "list"  # tags work as keys
    r = one("study", "StudyDate", "20200101-")
    assert (r.kind, r.low, r.high) == ("range", "20200101", None)


def test_time_bounds_are_normalised_to_their_precision() -> None:
    r = one("study", "StudyTime", "10-1230")
    assert (r.low, r.high) == ("100000", "123059.999999")
    assert one("study", "StudyTime", "0930").values == ("093000",)
    assert qido.normalize_time("1200") == "120000"
    assert qido.normalize_time("120000.5") == "120000.5"


def test_path_uids_are_fixed_filters_and_cannot_be_contradicted() -> None:
    q = qido.parse("series", [], fixed={"StudyInstanceUID": "1.2.3"})
    assert [(f.attribute.keyword, f.values) for f in q.filters] == [
        ("StudyInstanceUID", ("1.2.3",))
    ]
    with pytest.raises(UsageError, match="contradicts"):
        qido.parse("series", [("StudyInstanceUID", "9.9")], fixed={"StudyInstanceUID": "1.2.3"})


def test_includefield_limit_offset_and_fuzzy() -> None:
    q = qido.parse(
        "study",
        [("includefield", "StudyDescription,00180050"), ("includefield", "SliceThickness"),
         ("limit", "5000"), ("offset", "10"), ("fuzzymatching", "true")],
        max_limit=100,
    )  # fmt: skip
    assert [a.keyword for a in q.include] == ["StudyDescription"]
    assert q.include_tags == ("00180050",)  # keyword and tag name the same element once
    assert (q.limit, q.offset, q.fuzzy) == (100, 10, True)
    assert q.warnings == (qido.FUZZY_WARNING,)
    with pytest.raises(UsageError, match="neither a DICOM keyword"):
        qido.parse("study", [("includefield", "NoSuchThing")])
    with pytest.raises(UsageError, match="given twice"):
        qido.parse("study", [("PatientID", "a"), ("00100020", "b")])


def test_attribute_table_agrees_with_the_dicom_dictionary() -> None:
    """Tags and VRs are written out for readability; pydicom's dictionary is the reference."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for attr in qido.ATTRIBUTES:
        tag = tag_for_keyword(attr.keyword)
        assert tag is not None, attr.keyword
        assert (attr.tag, attr.vr) == (f"{tag:08X}", dictionary_VR(tag)), attr.keyword
    assert len(qido.BY_TAG) == len(qido.BY_KEYWORD) == len(qido.ATTRIBUTES)
