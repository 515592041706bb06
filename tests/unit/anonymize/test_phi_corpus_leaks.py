"""The proof: a corpus with PHI planted everywhere comes out with none of it, references intact.

The corpus (tests/helpers/phi_corpus.py) plants a unique value in every Table E.1-1 attribute
whose VR can hold one, in private elements with and without creators, in nested sequences, free
text, overlays, curves, file meta and the preamble. Outputs are searched as raw bytes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from mdm.dicom.anonymize import OPTION_CODES, Anonymizer, Options
from mdm.dicom.anonymize.batch import DONE, REFUSED, anonymize_paths
from tests.helpers.phi_corpus import Manifest, generate, leaks
from tests.unit.anonymize.conftest import SECRET

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    base = tmp_path_factory.mktemp("phi")
    manifest = generate(
        base / "in", patients=3, studies=1, series=2, instances=3, burned_in_every=7, seed=3
    )
    return base, manifest


@pytest.fixture(scope="module")
def basic_run(corpus):
    base, _manifest = corpus
    outcomes = list(anonymize_paths(Anonymizer(secret=SECRET), [base / "in"], base / "out"))
    return {o.source: o for o in outcomes}


def test_burned_in_files_are_refused_and_the_rest_done(corpus, basic_run) -> None:
    _, manifest = corpus
    for cf in manifest.files:
        outcome = basic_run[str(cf.path)]
        assert outcome.status == (REFUSED if cf.burned_in else DONE), outcome.error
    assert any(cf.burned_in for cf in manifest.files)


def test_no_planted_value_survives_in_any_output_byte(corpus, basic_run) -> None:
    _, manifest = corpus
    everything = manifest.tokens() | manifest.uids()
    assert len(everything) > 10_000
    found = {}
    for outcome in basic_run.values():
        if outcome.status == DONE:
            hit = leaks(Path(outcome.output).read_bytes(), everything)
            if hit:
                found[outcome.source] = sorted(hit)[:10]
    assert not found


def test_references_remain_consistent(corpus, basic_run) -> None:
    _, manifest = corpus
    outputs = {
        cf.sop_uid: dcmread(basic_run[str(cf.path)].output)
        for cf in manifest.files
        if not cf.burned_in
    }
    checked = 0
    for cf in manifest.files:
        if cf.burned_in:
            continue
        ds = outputs[cf.sop_uid]
        for seq, ref in (("ReferencedImageSequence", 0), ("SourceImageSequence", 1)):
            if len(cf.references) > ref and cf.references[ref] in outputs:
                target = outputs[cf.references[ref]]
                assert ds[seq][0].ReferencedSOPInstanceUID == target.SOPInstanceUID
                checked += 1
        same_series = [
            c for c in manifest.files if c.series_uid == cf.series_uid and not c.burned_in
        ]
        for other in same_series:
            assert outputs[other.sop_uid].SeriesInstanceUID == ds.SeriesInstanceUID
            assert outputs[other.sop_uid].FrameOfReferenceUID == ds.FrameOfReferenceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert checked >= 10
    assert len({o.SOPInstanceUID for o in outputs.values()}) == len(outputs)


def test_pseudonyms_one_per_patient_and_never_shared(corpus, basic_run) -> None:
    _, manifest = corpus
    per_patient: dict[int, set[tuple[str, str]]] = {}
    for cf in manifest.files:
        if not cf.burned_in:
            ds = dcmread(basic_run[str(cf.path)].output, stop_before_pixels=True)
            per_patient.setdefault(cf.patient, set()).add((ds.PatientID, str(ds.PatientName)))
    assert all(len(v) == 1 for v in per_patient.values())
    ids = [next(iter(v))[0] for v in per_patient.values()]
    assert len(set(ids)) == len(ids) == 3


def test_output_is_bit_identical_in_another_process(corpus, basic_run, tmp_path: Path) -> None:
    base, manifest = corpus
    code = (
        "import sys; from pathlib import Path\n"
        "from mdm.dicom.anonymize import Anonymizer\n"
        "from mdm.dicom.anonymize.batch import anonymize_paths\n"
        f"anonymizer = Anonymizer(secret={SECRET!r})\n"
        "list(anonymize_paths(anonymizer, [Path(sys.argv[1])], Path(sys.argv[2])))\n"
    )
    src = manifest.files[0].path.parent
    env = {"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "-c", code, str(src), str(tmp_path)], check=True, env=env, cwd=ROOT
    )
    again = sorted(p for p in tmp_path.rglob("*.dcm"))
    assert again
    for path in again:
        first = base / "out" / path.relative_to(tmp_path)
        assert first.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("options", "uids_go"),
    [
        (Options(retain_long_modified_dates=True), True),
        (Options(retain_safe_private=True), True),
        (Options(retain_uids=True), False),
    ],
    ids=["modified-dates", "safe-private", "retain-uids"],
)
def test_options_that_retain_no_text_still_leak_none(
    corpus, options: Options, uids_go: bool, tmp_path: Path
) -> None:
    # Clean Descriptors / Structured Content / Graphics and Retain Patient Characteristics keep
    # (cleaned) free text by definition; these options keep none, so no planted text survives.
    base, manifest = corpus
    anonymizer = Anonymizer(options=options, secret=SECRET)
    outcomes = list(anonymize_paths(anonymizer, [base / "in"], tmp_path))
    texts = {t for t in manifest.tokens() if t.startswith("PHI")}
    if uids_go:
        texts |= manifest.uids()
    for outcome in outcomes:
        if outcome.status == DONE:
            assert not leaks(Path(outcome.output).read_bytes(), texts), outcome.source


@pytest.mark.parametrize("name", sorted(OPTION_CODES))
def test_every_option_alone_anonymizes_the_corpus(corpus, name: str, tmp_path: Path) -> None:
    _base, manifest = corpus
    files = [cf.path for cf in manifest.files[:4]]
    options = Options(**{name: True})
    outcomes = list(anonymize_paths(Anonymizer(options=options, secret=SECRET), files, tmp_path))
    assert {o.status for o in outcomes} <= {DONE, REFUSED}
    for outcome in outcomes:
        if outcome.status == DONE:
            ds = dcmread(outcome.output)
            assert ds.PatientIdentityRemoved == "YES"
            assert not [e for e in ds if e.tag.is_private and name != "retain_safe_private"]


def test_phi_canary_no_planted_value_reaches_any_log(corpus, caplog, tmp_path: Path) -> None:
    base, manifest = corpus
    caplog.set_level(logging.DEBUG)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(manifest.files[0].path.read_bytes()[:700])  # truncated, with PHI
    inputs = [base / "in", broken]
    for options in (Options(), Options(clean_descriptors=True, retain_long_modified_dates=True)):
        list(anonymize_paths(Anonymizer(options=options, secret=SECRET), inputs, tmp_path / "o"))
    assert caplog.records, "the canary must see the anonymizer's log records"
    tokens = manifest.tokens()
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert not leaks(text.encode(), tokens), record.name


def test_pydicom_value_warnings_are_withheld_from_logs(caplog) -> None:
    # pydicom logs invalid values verbatim; the anonymizer package withholds them.
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    caplog.set_level(logging.DEBUG)
    ds = Dataset()
    bad = b"1.2.PHI0000001"
    ds._dict[Tag(0x00081155)] = RawDataElement(Tag(0x00081155), "UI", 14, bad, 0, False, True)
    with pytest.warns(UserWarning, match="PHI0000001"):  # warnings still say it, logs do not
        assert ds[0x00081155].value == "1.2.PHI0000001"
    records = [r for r in caplog.records if r.name == "pydicom"]
    assert records
    assert all("PHI0000001" not in r.getMessage() for r in records)
    assert any("value withheld" in r.getMessage() for r in records)
