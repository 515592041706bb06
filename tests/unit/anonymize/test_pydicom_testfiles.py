"""Every file pydicom ships for its own tests: none crashes; each is anonymized or refused.

The only failures allowed are files that are not DICOM data sets at all (JSON, text, ICC
profiles, gzip, a text dump, and ``no_meta.dcm``, which pydicom itself cannot parse without
knowing its encoding), plus the ``*_truncated.dcm`` files, which are; they fail with InvalidDicom
naming the file and the reason. All files are used, none skipped for size.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from mdm.dicom.anonymize import Anonymizer
from mdm.dicom.anonymize.batch import DONE, FAILED, REFUSED, anonymize_one
from tests.unit.anonymize.conftest import SECRET

NOT_DICOM = {".json", ".txt", ".icc", ".gz", ".dump", ""}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pydicom-out")
    anonymizer = Anonymizer(secret=SECRET)
    files = sorted(Path(f) for f in get_testdata_files() if Path(f).is_file())
    assert len(files) > 100
    return {f: anonymize_one(anonymizer, f, out) for f in files}


def test_each_file_is_anonymized_refused_or_named_as_not_dicom(outcomes) -> None:
    for path, outcome in outcomes.items():
        assert outcome.status in (DONE, REFUSED, FAILED)
        if outcome.status == REFUSED:
            assert outcome.reason
            assert outcome.error
        if outcome.status == FAILED:
            assert outcome.error.startswith(str(path)), outcome.error
            allowed = path.suffix in NOT_DICOM or path.name == "no_meta.dcm"
            assert allowed or "truncated" in outcome.error, outcome.error


def test_every_file_pydicom_reads_is_done_or_refused(outcomes) -> None:
    readable = 0
    for path, outcome in outcomes.items():
        try:
            dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: S112 - not a DICOM file pydicom can read as such
            continue
        readable += 1
        if "truncated" in path.name:  # pydicom reads these silently; we must not
            assert outcome.status == FAILED
            assert "truncated" in outcome.error
            continue
        assert outcome.status in (DONE, REFUSED), f"{path.name}: {outcome.error}"
    assert readable > 90
    counts = {s: sum(o.status == s for o in outcomes.values()) for s in (DONE, REFUSED)}
    assert counts[DONE] > 80
    assert counts[REFUSED] > 20


def test_outputs_are_readable_and_marked(outcomes) -> None:
    for outcome in outcomes.values():
        if outcome.status == DONE:
            ds = dcmread(outcome.output, stop_before_pixels=True)
            assert ds.PatientIdentityRemoved == "YES"
            assert not [e for e in ds if e.tag.is_private]
