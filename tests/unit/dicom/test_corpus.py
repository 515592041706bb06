"""The synthetic corpus is deterministic, realistic in shape, and sized as asked."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom import dcmread

from mdm.dicom.corpus import CorpusSpec, generate, to_bytes, write


def test_same_seed_same_bytes_other_seed_other_uids() -> None:
    spec = CorpusSpec(patients=1, studies_per_patient=1, series_per_study=2, instances_per_series=2)
    a = [to_bytes(ds) for _, ds in generate(spec)]
    b = [to_bytes(ds) for _, ds in generate(spec)]
    assert a == b
    other = CorpusSpec(**{**spec.__dict__, "seed": 1})
    uids = {row.sop_instance_uid for row, _ in generate(spec)}
    assert not uids & {row.sop_instance_uid for row, _ in generate(other)}


def test_default_corpus_shape() -> None:
    rows = [row for row, _ in generate(CorpusSpec())]
    assert len(rows) == CorpusSpec().total == 60
    assert len({r.patient_id for r in rows}) == 3
    assert len({r.study_uid for r in rows}) == 6
    assert len({r.series_uid for r in rows}) == 12
    assert {r.modality for r in rows} == {"CT", "MR"}
    assert all(r.sop_instance_uid.startswith("2.25.") for r in rows)


def test_identifying_attributes_and_pixels() -> None:
    _, ds = next(generate(CorpusSpec(rows=32, columns=48)))
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientAddress",
        "OtherPatientIDsSequence",
        "InstitutionName",
        "ReferringPhysicianName",
        "OperatorsName",
        "DeviceSerialNumber",
        "AccessionNumber",
        "StudyDate",
        "FrameOfReferenceUID",
    ):
        assert ds.get(keyword), keyword
    back = dcmread(io.BytesIO(to_bytes(ds)))
    assert (back.Rows, back.Columns) == (32, 48)
    assert len(back.PixelData) == 32 * 48 * 2
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_ct_bench_instances_are_half_a_megabyte() -> None:
    spec = CorpusSpec.ct_bench(100)
    assert spec.total >= 100
    _, ds = next(generate(spec))
    assert 500_000 < len(to_bytes(ds)) < 560_000


def test_write_makes_files_and_manifest(tmp_path: Path) -> None:
    spec = CorpusSpec(patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=3)
    rows = write(spec, tmp_path)
    assert all((tmp_path / r.path).is_file() for r in rows)
    manifest = (tmp_path / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 4
    assert manifest[0].startswith("path,patient_id")
