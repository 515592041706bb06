"""`mdm anonymize` as a user runs it: a tree with good, burned-in and broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.helpers.phi_corpus import Manifest, generate, leaks


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Manifest]:
    manifest = generate(tmp_path / "in", patients=2, series=1, instances=2, burned_in_every=4)
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    (tmp_path / "secret").write_bytes(b"a site secret of thirty-two bytes\n")
    return tmp_path, manifest


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


def test_anonymize_a_tree_with_report_summary_and_quarantine(run_mdm, tree) -> None:
    base, manifest = tree
    proc = run_mdm(
        "--debug",  # the PHI canary: debug logging on, and still no planted value anywhere
        "anonymize",
        str(base / "in"),
        "--out",
        str(base / "out"),
        "--secret-file",
        str(base / "secret"),
        "--report",
        str(base / "report.json"),
        "--quiet",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip() == "done 3, refused 1, failed 1"
    assert "refused: " in proc.stderr
    assert "failed: " in proc.stderr
    assert "notes.txt" in proc.stderr
    assert not leaks((proc.stdout + proc.stderr).encode(), manifest.tokens())
    report = json.loads((base / "report.json").read_text())
    assert (report["done"], report["refused"], report["failed"]) == (3, 1, 1)
    assert report["profile"].startswith("PS3.15 2026c")
    statuses = {Path(f["source"]).name: f["status"] for f in report["files"]}
    assert statuses["notes.txt"] == "failed"
    assert not leaks(json.dumps(report).encode(), manifest.tokens())
    quarantine = base / "out.quarantine"
    assert sorted(p.name for p in quarantine.rglob("*") if p.is_file()) == ["IM1.dcm", "notes.txt"]
    everything = manifest.tokens() | manifest.uids()
    for path, data in _tree_bytes(base / "out").items():
        assert not leaks(data, everything), path


def test_same_secret_same_bytes_and_options(run_mdm, tree) -> None:
    base, _ = tree
    args = ["--secret-file", str(base / "secret"), "--quiet", "--no-quarantine"]
    run_mdm("anonymize", str(base / "in" / "PAT0"), "--out", str(base / "a"), *args)
    run_mdm("anonymize", str(base / "in" / "PAT0"), "--out", str(base / "b"), *args)
    first, second = _tree_bytes(base / "a"), _tree_bytes(base / "b")
    assert first
    assert first == second
    run_mdm(
        "anonymize",
        str(base / "in" / "PAT0"),
        "--out",
        str(base / "c"),
        *args,
        "--option",
        "retain-long-modified-dates",
        "--option",
        "retain-uids",
    )
    third = _tree_bytes(base / "c")
    assert set(third).isdisjoint(first)  # UIDs retained: other file names
    ds = dcmread(next((base / "c").rglob("*.dcm")))
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113110"}


def test_secret_from_settings_environment(run_mdm, tree) -> None:
    base, _ = tree
    proc = run_mdm(
        "anonymize",
        str(base / "in" / "PAT1"),
        "--out",
        str(base / "o"),
        "--quiet",
        env={"MDM_ANONYMIZE__SECRET_FILE": str(base / "secret")},
        check=False,
    )
    assert proc.stdout.strip().startswith("done ")


def test_clear_errors(run_mdm, tree) -> None:
    base, _ = tree
    missing = run_mdm("anonymize", str(base / "in"), "--out", str(base / "o"), check=False)
    assert missing.returncode == 1
    assert "no site secret" in missing.stderr
    (base / "short").write_bytes(b"tiny")
    short = run_mdm(
        "anonymize",
        str(base / "in"),
        "--out",
        str(base / "o"),
        "--secret-file",
        str(base / "short"),
        check=False,
    )
    assert "at least 16 are needed" in short.stderr
    assert short.returncode == 1
    inside = run_mdm(
        "anonymize",
        str(base / "in"),
        "--out",
        str(base / "o"),
        "--secret-file",
        str(base / "secret"),
        "--quarantine",
        str(base / "o" / "q"),
        check=False,
    )
    assert "keep it outside --out" in inside.stderr
    bad = run_mdm(
        "anonymize",
        str(base / "in"),
        "--out",
        str(base / "o"),
        "--secret-file",
        str(base / "secret"),
        "--option",
        "retain-everything",
        check=False,
    )
    assert bad.returncode == 2
    assert "retain-everything" in bad.stderr
