"""The committed profile module is exactly what the generator makes from the standard."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from mdm.dicom.anonymize import _table_e1_1 as table

ROOT = Path(__file__).resolve().parents[3]
# The NEMA DocBook is not redistributed with MDM (see docs/anonymization.md); the project
# machines keep it in ../shared/specs, elsewhere point MDM_PART15_XML at a copy.
SOURCE = Path(
    os.environ.get("MDM_PART15_XML", str(ROOT.parent / "shared" / "specs" / "part15_2026c.xml"))
)
TOOL = ROOT / "tools" / "gen_profile.py"


def _tool():
    spec = importlib.util.spec_from_file_location("gen_profile", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_profile"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    if not SOURCE.exists():
        pytest.fail(f"the PS3.15 2026c DocBook {SOURCE} is missing: set MDM_PART15_XML")
    return _tool()


def test_committed_module_matches_a_fresh_generation(gen) -> None:
    committed = (ROOT / "src/mdm/dicom/anonymize/_table_e1_1.py").read_text()
    assert gen.generate(SOURCE) == committed, "regenerate: .venv/bin/python tools/gen_profile.py"


def test_module_records_edition_and_source_hash(gen) -> None:
    assert table.EDITION == "2026c"
    assert hashlib.sha256(SOURCE.read_bytes()).hexdigest() == table.SOURCE_SHA256


def test_header_labels_and_row_floors() -> None:
    assert table.LABELS[:5] == (
        "Attribute Name",
        "Tag",
        "Retd. (from PS3.6)",
        "In Std. Comp. IOD (from PS3.3)",
        "Basic Prof.",
    )
    assert len(table.COLUMNS) == 15
    assert all(len(row) == 15 for row in table.ROWS)
    assert len(table.ROWS) >= 640
    assert len(table.SAFE_PRIVATE) >= 450
    assert set(table.ACTION_CODES) >= {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D"}
    assert {"X/Z/D", "X/Z/U*"} <= set(table.ACTION_CODES)


def test_2026c_counts_as_measured() -> None:
    # Numbers from the research note (shared/notes/anonymization.md section 1.1).
    assert len(table.ROWS) == 656
    assert len(table.SAFE_PRIVATE) == 479
    basic = [row[4] for row in table.ROWS]
    assert basic.count("X") == 416
    assert basic.count("D") == 93
    assert basic.count("U") == 55
    assert sum(1 for r in table.ROWS if r[2] == "Y") == 102


def test_generator_rejects_a_changed_header(gen, tmp_path: Path) -> None:
    text = SOURCE.read_text(encoding="utf-8")
    broken = tmp_path / "part15.xml"
    broken.write_text(text.replace("Rtn. UIDs Opt.", "Rtn. UID Opt.", 1), encoding="utf-8")
    with pytest.raises(gen.ProfileSourceError, match="header"):
        gen.parse(broken)


def test_generator_rejects_a_half_read_table(gen, tmp_path: Path) -> None:
    text = SOURCE.read_text(encoding="utf-8")
    start = text.index('xml:id="table_E.1-1"')
    body = text.index("<tbody>", start)
    end = text.index("</tbody>", body)
    rows = text[body:end].split("</tr>")
    truncated = text[:body] + "</tr>".join(rows[:100]) + "</tr>" + text[end:]
    small = tmp_path / "part15.xml"
    small.write_text(truncated, encoding="utf-8")
    with pytest.raises(gen.ProfileSourceError, match="floor"):
        gen.parse(small)


def test_check_mode_reports_a_stale_copy(gen, tmp_path: Path) -> None:
    stale = tmp_path / "_table.py"
    stale.write_text("EDITION = 'old'\n")
    assert gen.main([str(SOURCE), "--out", str(stale), "--check"]) == 1
    assert gen.main([str(SOURCE), "--out", str(stale)]) == 0
    assert gen.main([str(SOURCE), "--out", str(stale), "--check"]) == 0
