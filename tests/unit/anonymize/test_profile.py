"""Resolving Table E.1-1 into one action per tag, for each option set."""

from __future__ import annotations

import pytest

from mdm.dicom.anonymize import _table_e1_1 as table
from mdm.dicom.anonymize.profile import OPTION_CODES, Options, Profile
from mdm.errors import UsageError


def test_every_single_tag_row_and_every_rule_row_is_compiled() -> None:
    profile = Profile.build()
    singles = [
        r for r in table.ROWS if "x" not in r[1] and r[1].startswith("(") and "g" not in r[1]
    ]
    assert len(profile.actions) == len(singles) == 652
    assert profile.curve_action == "X"
    assert profile.overlay_action == "X"
    assert profile.overlay_comments_action == "X"
    assert profile.private_action == "X"


def test_tags_unknown_to_pydicom_are_handled_by_tag() -> None:
    from pydicom.datadict import dictionary_VR

    profile = Profile.build()
    unknown = []
    for tag in profile.actions:
        try:
            dictionary_VR(tag)
        except KeyError:
            unknown.append(tag)
    assert len(unknown) == 25
    assert profile.actions[0x00100012] == "X"  # Name to Use, new in 2025


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (0x00100010, "Z"),  # Patient's Name
        (0x00100020, "D"),  # Patient ID, Z/D
        (0x00080018, "U"),  # SOP Instance UID
        (0x00081140, "U"),  # Referenced Image Sequence, X/Z/U*
        (0x00081110, "X"),  # Referenced Study Sequence, X/Z, Type 3 sequence
        (0x00102203, "Z"),  # Patient's Sex Neutered, X/Z
        (0x00080080, "D"),  # Institution Name, X/Z/D
        (0x00080021, "D"),  # Series Date, X/D
        (0x00081030, "X"),  # Study Description
        (0x00400555, "Z"),  # Acquisition Context Sequence, X/Z
    ],
)
def test_basic_profile_and_combined_codes(tag: int, expected: str) -> None:
    assert Profile.build().actions[tag] == expected


def test_options_override_the_basic_profile() -> None:
    opts = Options(
        retain_uids=True,
        retain_device_identity=True,
        retain_patient_characteristics=True,
        clean_descriptors=True,
        retain_long_modified_dates=True,
        retain_safe_private=True,
    )
    actions = Profile.build(opts).actions
    assert actions[0x00080018] == "K"  # SOP Instance UID
    assert actions[0x00181000] == "K"  # Device Serial Number
    assert actions[0x00101010] == "K"  # Patient's Age
    assert actions[0x00081030] == "C"  # Study Description
    assert actions[0x00080020] == "C"  # Study Date
    assert actions[0x00080055] == "C"  # Station AE Title under Retain Device Identity
    # Date of Last Calibration: Device Identity says K, Modified Dates says C: C wins.
    assert actions[0x00181200] == "C"
    assert Profile.build(opts).private_action == "C"
    full = Profile.build(Options(retain_long_full_dates=True, retain_device_identity=True))
    assert full.actions[0x00181200] == "K"


def test_option_names_and_errors() -> None:
    opts = Options.from_names(["retain-uids", "clean_descriptors"])
    assert opts.enabled() == ("retain_uids", "clean_descriptors")
    with pytest.raises(UsageError, match="unknown anonymization option 'retain-everything'"):
        Options.from_names(["retain-everything"])
    with pytest.raises(UsageError, match="exclude each other"):
        Options(retain_long_full_dates=True, retain_long_modified_dates=True)


def test_method_codes_are_cid_7050() -> None:
    profile = Profile.build(Options(clean_descriptors=True, retain_uids=True))
    assert profile.method_codes() == [
        ("113100", "Basic Application Confidentiality Profile"),
        ("113110", "Retain UIDs Option"),
        ("113105", "Clean Descriptors Option"),
    ]
    assert all(len(v) <= 64 for v in profile.method_description())
    assert len({code for code, _ in OPTION_CODES.values()}) == 10
