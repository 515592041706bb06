"""Pacs construction from settings, and the walk's filters (no network)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mdm.dicom.pacs import Pacs
from mdm.dicom.retrieve import RetrieveRequest
from mdm.dicom.walk import study_filters
from mdm.errors import ConfigError, UsageError
from mdm.settings import DicomSettings, PacsSettings, Settings


def test_several_pacs_from_a_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "mdm.toml"
    path.write_text(
        """
[dicom]
ae_title = "MDM-SITE"
port = 11112

[dicom.pacs.main]
aet = "ORTHANC"
host = "pacs.example.org"
port = 4242
method = "c-get"
max_associations = 4

[dicom.pacs.archive]
aet = "DCM4CHEE"
port = 11112
method = "C-MOVE"
move_destination = "MDM-MOVE"
max_pdu = 65536
"""
    )
    settings = Settings.load(path, environ={"MDM_DICOM__AE_TITLE": "MDM-ENV"})
    main = Pacs.from_settings(settings, "main")
    archive = Pacs.from_settings(settings, "archive")
    assert (main.method, main.calling_aet, main.peer.host) == (
        "c-get",
        "MDM-ENV",
        "pacs.example.org",
    )
    assert (archive.method, archive.destination) == ("c-move", "MDM-MOVE")
    assert archive.settings.max_pdu == 65536
    with pytest.raises(ConfigError, match="archive, main"):
        Pacs.from_settings(settings, "nope")


def test_bad_method_and_associations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"dicom\.pacs\.x\.method"):
        Pacs("x", PacsSettings(method="wado"))
    with pytest.raises(ConfigError, match="max_associations"):
        Pacs("x", PacsSettings(max_associations=0))


def test_cmove_needs_a_receiver() -> None:
    pacs = Pacs("x", PacsSettings(method="c-move"), DicomSettings())
    with pytest.raises(ConfigError, match="storage SCP"):
        pacs.retrieve([RetrieveRequest("1.2", expected=frozenset({"1.2.3"}))], print)


def test_move_destination_defaults_to_our_ae_title() -> None:
    assert Pacs("x", PacsSettings(), DicomSettings(ae_title="ME")).destination == "ME"


def test_study_filters() -> None:
    assert study_filters() == {}
    assert study_filters(study_uid="1.2", patient_id="P1", since="2024-01-31") == {
        "StudyInstanceUID": "1.2",
        "PatientID": "P1",
        "StudyDate": "20240131-",
    }
    assert study_filters(since=dt.date(2023, 5, 6)) == {"StudyDate": "20230506-"}
    with pytest.raises(UsageError, match="--since"):
        study_filters(since="last tuesday")
    with pytest.raises(UsageError, match="wildcards"):
        study_filters(patient_id="P*")
