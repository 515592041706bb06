"""A batch goes on past bad files, quarantines them outside the export, and reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdm.dicom.anonymize import Anonymizer
from mdm.dicom.anonymize.batch import DONE, FAILED, REFUSED, Summary, anonymize_paths
from mdm.errors import AnonymizationRefused, InvalidDicom
from tests.helpers.phi_corpus import generate
from tests.unit.anonymize.conftest import SECRET


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    manifest = generate(tmp_path / "in", patients=1, series=1, instances=3, burned_in_every=3)
    good = manifest.files[0].path.read_bytes()
    (tmp_path / "in" / "truncated.dcm").write_bytes(good[: len(good) // 3])
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    (tmp_path / "in" / "empty.dcm").write_bytes(b"")
    return tmp_path / "in"


def test_batch_continues_quarantines_and_reports(inputs: Path, tmp_path: Path) -> None:
    anonymizer = Anonymizer(secret=SECRET)
    quarantine = tmp_path / "quarantine"
    summary = Summary()
    for outcome in anonymize_paths(anonymizer, [inputs], tmp_path / "out", quarantine):
        summary.add(outcome)
    report = summary.as_json(anonymizer.describe())
    assert (report["done"], report["refused"], report["failed"]) == (2, 1, 3)
    failed = {Path(o.source).name: o for o in summary.outcomes if o.status == FAILED}
    assert set(failed) == {"truncated.dcm", "notes.txt", "empty.dcm"}
    for name, outcome in failed.items():
        assert outcome.error.startswith(str(inputs / name))
        assert Path(outcome.quarantined).read_bytes() == (inputs / name).read_bytes()
    refused = next(o for o in summary.outcomes if o.status == REFUSED)
    assert refused.reason == "burned-in-annotation"
    assert Path(refused.quarantined).parent == quarantine / "refused"
    json.dumps(report)  # machine-readable
    done = [o for o in summary.outcomes if o.status == DONE]
    assert all(Path(o.output).is_relative_to(tmp_path / "out") for o in done)
    assert not list((tmp_path / "out").rglob(".tmp-*"))
    assert all(o.identity is not None for o in done)
    assert "identity" not in json.dumps(report)


def test_anonymize_file_errors_name_the_file(inputs: Path, tmp_path: Path) -> None:
    anonymizer = Anonymizer(secret=SECRET)
    with pytest.raises(InvalidDicom, match=r"truncated\.dcm"):
        anonymizer.anonymize_file(inputs / "truncated.dcm")
    with pytest.raises(InvalidDicom, match="no such file"):
        anonymizer.anonymize_file(inputs / "missing.dcm")
    burned = sorted(inputs.rglob("IM2.dcm"))[0]
    with pytest.raises(AnonymizationRefused, match=r"IM2\.dcm") as info:
        anonymizer.anonymize_file(burned)
    assert info.value.reason == "burned-in-annotation"
    ok = sorted(inputs.rglob("IM0.dcm"))[0]
    result = anonymizer.anonymize_file(ok, tmp_path / "one.dcm")
    assert (tmp_path / "one.dcm").read_bytes()[128:132] == b"DICM"
    assert (tmp_path / "one.dcm").read_bytes()[:128] == b"\x00" * 128
    assert result.identity.pseudo_sop_instance_uid == result.dataset.SOPInstanceUID


def test_cuts_anywhere_in_the_pixels_or_inside_an_element_are_found(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_files

    from mdm.dicom.anonymize.batch import read_dataset

    source = next(Path(f) for f in get_testdata_files() if Path(f).name == "CT_small.dcm")
    data = source.read_bytes()
    missed = []
    messages: list[tuple[str, str]] = []
    for cut in [*range(132, len(data), 997), len(data) - 1, len(data) - 7]:
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        try:
            read_dataset(path)
        except InvalidDicom as exc:
            messages.append((str(path), exc.message))
        else:
            missed.append(cut)
    # a cut exactly between two header elements looks like a shorter valid file
    assert len(missed) <= 3, missed
    assert all(message.startswith(path) for path, message in messages)


def test_output_path_components_cannot_escape_the_output_directory(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    from mdm.dicom.anonymize.batch import output_path

    ds = Dataset()
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.StudyInstanceUID = ".."
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.SeriesInstanceUID = "../../etc"
    ds.SOPInstanceUID = "1.2.3"
    path = output_path(tmp_path, ds)
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert path.name == "1.2.3.dcm"
