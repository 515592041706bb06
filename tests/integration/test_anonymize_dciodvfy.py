"""Anonymized files stay valid: dciodvfy (dicom3tools) reports no error the input did not have.

Inputs: realistic CT headers and a file with a value in every Table E.1-1 attribute (the PHI
corpus), and pydicom's own CT, MR, RT and waveform test files, under the Basic Profile and under
a combination of options. Error lines are compared with the values in them blanked, since the
values are what anonymization changes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

from mdm.dicom.anonymize import Anonymizer, Options
from mdm.dicom.anonymize.batch import DONE, anonymize_one
from tests.helpers.phi_corpus import generate
from tests.helpers.tools import require_tool

SECRET = b"integration secret for dciodvfy!"
PYDICOM = {"CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm"}
PYDICOM |= {"waveform_ecg.dcm", "liver.dcm", "emri_small_RLE.dcm"}
_VALUE = re.compile(r"(?<!Element=)(?<!Module=)<[^>]*>")


def errors(dciodvfy: str, path: Path) -> set[str]:
    proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return {_VALUE.sub("<>", line) for line in lines if line.startswith("Error")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("dciodvfy")
    ct = generate(base / "ct", patients=1, series=1, instances=2, full=False)
    planted = generate(base / "planted", patients=1, series=1, instances=2, seed=5)
    local = [Path(f) for f in get_testdata_files() if Path(f).name in PYDICOM]
    assert len(local) >= 6
    return [ct.files[1].path, planted.files[1].path, *local]


@pytest.mark.parametrize(
    "options",
    [
        Options(),
        Options(
            retain_long_modified_dates=True,
            retain_device_identity=True,
            retain_patient_characteristics=True,
            clean_descriptors=True,
            clean_structured_content=True,
            retain_safe_private=True,
        ),
    ],
    ids=["basic", "options"],
)
def test_no_new_dciodvfy_errors(inputs: list[Path], options: Options, tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy", package="dicom3tools")
    anonymizer = Anonymizer(options=options, secret=SECRET)
    new: dict[str, set[str]] = {}
    for path in inputs:
        outcome = anonymize_one(anonymizer, path, tmp_path)
        assert outcome.status == DONE, outcome.error
        added = errors(dciodvfy, Path(outcome.output)) - errors(dciodvfy, path)
        if added:
            new[path.name] = added
    assert not new


def test_the_check_can_fail(tmp_path: Path) -> None:
    # An instance stripped of a Type 1 attribute must show a new error, or the test is blind.
    from pydicom import dcmread

    dciodvfy = require_tool("dciodvfy", package="dicom3tools")
    source = next(Path(f) for f in get_testdata_files() if Path(f).name == "CT_small.dcm")
    broken = dcmread(source)
    del broken.Modality
    broken.save_as(tmp_path / "broken.dcm")
    assert errors(dciodvfy, tmp_path / "broken.dcm") - errors(dciodvfy, source)
