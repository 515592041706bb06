"""QIDO-RS matching conformance, one test per PS3.4 C.2.2.2 matching type, against a database.

Runs here on SQLite and, imported by tests/integration/test_catalog_engines.py, on PostgreSQL.
Each test asks the catalog exactly what a DICOMweb client would send (PS3.18 §8.3.4).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mdm.catalog import metadata, qido
from mdm.catalog.db import CatalogDatabases
from mdm.errors import UsageError
from tests.unit.catalog.helpers import (
    ADMIN,
    CT,
    S1,
    S1_MR,
    S2,
    S3,
    S4,
    caller,
    dbs,
)

__all__ = ["dbs"]


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    return f"sqlite:///{tmp_path_factory.mktemp('qido')}/catalog.db"


def run(
    dbs: CatalogDatabases, level: qido.Level, params: list[tuple[str, str]], **fixed: str
) -> metadata.SearchResult:
    query = qido.parse(level, params, fixed=fixed)
    with dbs.catalog.session() as s:
        return metadata.search(s, caller(ADMIN), query)


def studies(dbs: CatalogDatabases, **params: str) -> list[str]:
    result = run(dbs, "study", list(params.items()))
    return sorted(m["0020000D"]["Value"][0] for m in result.matches)


def test_single_value_matching_is_exact_and_case_sensitive(dbs: CatalogDatabases) -> None:
    # C.2.2.2.1
    assert studies(dbs, PatientID="PSN-001") == [S1, S3]
    assert studies(dbs, StudyDescription="Brain MRI") == [S1]
    assert studies(dbs, StudyDescription="brain mri") == []
    assert studies(dbs, StudyDate="20200115") == [S1]
    assert studies(dbs, StudyTime="080000") == [S3]


def test_single_value_person_name_is_case_insensitive(dbs: CatalogDatabases) -> None:
    # C.2.2.2.1: PN may be matched insensitive to case; pseudonyms are typed by people
    assert studies(dbs, PatientName="DOE^JANE") == [S1, S3]
    assert studies(dbs, PatientName="doe^jane") == [S1, S3]


def test_universal_matching_returns_everything_and_the_attribute(dbs: CatalogDatabases) -> None:
    # C.2.2.2.3: an empty value (or * alone) matches all and asks for the attribute
    assert studies(dbs, StudyID="") == [S1, S2, S3, S4]
    assert studies(dbs, AccessionNumber="*") == [S1, S2, S3, S4]
    result = run(dbs, "study", [("00200010", "")])
    assert all("00200010" in m for m in result.matches)


def test_list_of_uid_matching(dbs: CatalogDatabases) -> None:
    # C.2.2.2.2: comma (QIDO) or backslash (DICOM) separated
    assert studies(dbs, StudyInstanceUID=f"{S1},{S3}") == [S1, S3]
    assert studies(dbs, StudyInstanceUID=f"{S2}\\{S4}") == [S2, S4]
    assert studies(dbs, StudyInstanceUID="2.25.999") == []


def test_wildcard_star_and_question_mark(dbs: CatalogDatabases) -> None:
    # C.2.2.2.4
    assert studies(dbs, StudyDescription="Brain*") == [S1, S3]
    assert studies(dbs, AccessionNumber="A10?") == [S1, S3]
    assert studies(dbs, AccessionNumber="?200") == [S2]
    assert studies(dbs, PatientName="doe*") == [S1, S3, S4]  # PN: case-insensitive
    assert studies(dbs, StudyDescription="brain*") == []  # LO: case-sensitive


def test_wildcard_escapes_percent_underscore_and_escape_char(dbs: CatalogDatabases) -> None:
    # % _ and \ are ordinary characters in DICOM values: never SQL wildcards
    assert studies(dbs, StudyDescription="*50%_off") == [S2]
    assert studies(dbs, StudyDescription="*0%*") == [S2]
    assert studies(dbs, StudyDescription="Brain_MRI*") == [S3]  # not "Brain MRI"
    assert studies(dbs, StudyDescription="Knee\\MRI") == [S4]  # single value, backslash literal
    assert studies(dbs, StudyDescription="*\\MRI") == [S4]
    assert studies(dbs, StudyDescription="%") == []
    assert studies(dbs, StudyDescription="_rain MRI") == []


def test_date_range_matching(dbs: CatalogDatabases) -> None:
    # C.2.2.2.5: closed, open-ended and open-started ranges, inclusive bounds
    assert studies(dbs, StudyDate="20200101-20201231") == [S1, S2]
    assert studies(dbs, StudyDate="20201231-") == [S2, S3]
    assert studies(dbs, StudyDate="-20191231") == [S4]
    assert studies(dbs, StudyDate="20200115-20200115") == [S1]


def test_time_range_bounds_cover_their_precision(dbs: CatalogDatabases) -> None:
    # -1200 includes 12:00:30: an hhmm upper bound covers its whole minute
    assert studies(dbs, StudyTime="1000-1200") == [S1, S4]
    assert studies(dbs, StudyTime="235959-") == [S2]
    assert studies(dbs, StudyTime="-08") == [S3]


def test_multi_valued_modalities_in_study(dbs: CatalogDatabases) -> None:
    assert studies(dbs, ModalitiesInStudy="CT") == [S2]
    assert studies(dbs, ModalitiesInStudy="SR") == [S2]
    assert studies(dbs, ModalitiesInStudy="CT,MR") == [S1, S2, S3, S4]
    result = run(dbs, "study", [("StudyInstanceUID", S2)])
    assert result.matches[0]["00080061"]["Value"] == ["CT", "SR"]


def test_combined_keys_are_a_conjunction(dbs: CatalogDatabases) -> None:
    assert studies(dbs, PatientID="PSN-001", StudyDate="20210101-") == [S3]


def test_series_and_instance_levels_match_on_higher_level_keys(dbs: CatalogDatabases) -> None:
    # PS3.18 §10.6.1: /series and /instances accept study and patient keys
    result = run(dbs, "series", [("Modality", "MR"), ("StudyDate", "20200101-")])
    assert sorted(m["0020000D"]["Value"][0] for m in result.matches) == [S1, S3]
    result = run(
        dbs, "instance", [("InstanceNumber", "2")], StudyInstanceUID=S1, SeriesInstanceUID=S1_MR
    )
    assert [m["00080018"]["Value"][0] for m in result.matches] == ["2.25.3012"]
    result = run(dbs, "instance", [("SOPClassUID", CT)])
    assert [m["0020000D"]["Value"][0] for m in result.matches] == [S2]


def test_includefield_answers_from_stored_dicom_json(dbs: CatalogDatabases) -> None:
    # (0018,0050) SliceThickness is not a typed column: it comes from the stored header
    result = run(dbs, "series", [("includefield", "00180050"), ("includefield", "PatientSex")],
                 StudyInstanceUID=S1)  # fmt: skip
    (match,) = result.matches
    assert match["00180050"] == {"vr": "DS", "Value": ["1.5"]}
    assert match["00100040"] == {"vr": "CS", "Value": ["F"]}
    result = run(dbs, "instance", [("includefield", "all")], StudyInstanceUID=S4)
    assert "00200032" in result.matches[0]  # instance-specific, kept per instance
    assert "7FE00010" not in result.matches[0]  # bulk data is never stored


def test_limit_offset_page_and_the_server_cap_warns(dbs: CatalogDatabases) -> None:
    everything = studies(dbs)
    page1 = run(dbs, "study", [("limit", "2")]).matches
    page2 = run(dbs, "study", [("limit", "2"), ("offset", "2")]).matches
    uids = [m["0020000D"]["Value"][0] for m in page1 + page2]
    assert sorted(uids) == everything
    assert len(set(uids)) == 4
    query = qido.parse("study", [])
    with dbs.catalog.session() as s:
        capped = metadata.search(s, caller(ADMIN), query, max_results=3)
    assert len(capped.matches) == 3
    assert capped.more
    assert qido.MORE_WARNING in capped.warnings


def test_fuzzymatching_true_is_literal_with_a_warning(dbs: CatalogDatabases) -> None:
    result = run(dbs, "study", [("PatientName", "DOE^JANE"), ("fuzzymatching", "true")])
    assert len(result.matches) == 2
    assert qido.FUZZY_WARNING in result.warnings
    assert run(dbs, "study", [("fuzzymatching", "false")]).warnings == []


def test_answers_are_dicom_json(dbs: CatalogDatabases) -> None:
    (match,) = run(dbs, "study", [("StudyInstanceUID", S1)]).matches
    assert match["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert match["00201208"] == {"vr": "IS", "Value": [2]}
    assert match["00201206"] == {"vr": "IS", "Value": [1]}
    assert match["00200010"] == {"vr": "SH"}  # empty: no Value


@pytest.mark.parametrize(
    "params",
    [
        [("StudyInstanceUID", "1.2.*")],  # no wildcard on UI
        [("StudyDate", "2020*")],  # no wildcard on DA
        [("StudyDate", "2020-01-01-2020")],
        [("Modality", "MR")],  # a series key at study level
        [("PatientWeight", "70")],  # not searchable
        [("limit", "-1")],
        [("fuzzymatching", "maybe")],
        [("StudyDate", "20201231-20200101")],
    ],
)
def test_bad_queries_are_refused_not_answered(
    dbs: CatalogDatabases, params: list[tuple[str, str]]
) -> None:
    with pytest.raises(UsageError):
        run(dbs, "study", params)
