"""Generate the PS3.15 Annex E profile data module from the NEMA DocBook source.

Usage::

    .venv/bin/python tools/gen_profile.py [PART15_XML] [--out PATH] [--check]

Reads Table E.1-1 (every column), the action-code table E.1-1a and the Safe Private
Attributes table E.3.10-1 from ``part15.xml`` and writes
``src/mdm/dicom/anonymize/_table_e1_1.py``: plain tuples of the cells as the standard prints
them, plus the edition and the SHA-256 of the source. The anonymizer compiles those tuples into
its dispatch table at run time; nothing in the profile is typed by hand.

Why a generator and not a hand-kept list: the table grows by 15-20 rows a year and a
de-identifier that lags the standard leaks the attributes added since (see
docs/anonymization.md). The checks below make a future edition fail loudly rather than be
half-read: the header labels must be the ones this code maps to option names, and the row
counts must stay above a floor. ``--check`` regenerates in memory and exits 1 when the committed
module differs (the unit test does the same).

Only the standard library is used (xml.etree), so the tool runs anywhere the project does.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "specs" / "part15_2026c.xml"
DEFAULT_OUT = ROOT / "src" / "mdm" / "dicom" / "anonymize" / "_table_e1_1.py"

NS = "{http://docbook.org/ns/docbook}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"

#: Header labels of Table E.1-1, in order, and the option name each action column maps to.
E11_HEADER: tuple[tuple[str, str], ...] = (
    ("Attribute Name", "name"),
    ("Tag", "tag"),
    ("Retd. (from PS3.6)", "retired"),
    ("In Std. Comp. IOD (from PS3.3)", "in_std_iod"),
    ("Basic Prof.", "basic"),
    ("Rtn. Safe Priv. Opt.", "retain_safe_private"),
    ("Rtn. UIDs Opt.", "retain_uids"),
    ("Rtn. Dev. Id. Opt.", "retain_device_identity"),
    ("Rtn. Inst. Id. Opt.", "retain_institution_identity"),
    ("Rtn. Pat. Chars. Opt.", "retain_patient_characteristics"),
    ("Rtn. Long. Full Dates Opt.", "retain_long_full_dates"),
    ("Rtn. Long. Modif. Dates Opt.", "retain_long_modified_dates"),
    ("Clean Desc. Opt.", "clean_descriptors"),
    ("Clean Struct. Cont. Opt.", "clean_structured_content"),
    ("Clean Graph. Opt.", "clean_graphics"),
)
SAFE_PRIVATE_HEADER = ("Data Element", "Private Creator", "VR", "VM", "Meaning")

#: Floors: 2026c has 656 / 11 / 479 rows; an edition below these was not fully read.
E11_MIN_ROWS = 640
E11A_MIN_ROWS = 11
SAFE_PRIVATE_MIN_ROWS = 450

ACTIONS = frozenset({"", "D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})
_TAG = re.compile(r"^\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)$")


class ProfileSourceError(Exception):
    """The DocBook does not look like the tables this generator understands."""


def _text(el: ET.Element) -> str:
    """Cell text with whitespace collapsed and olink placeholders rendered like the PDF."""
    parts: list[str] = []

    def walk(node: ET.Element) -> None:
        if node.tag == NS + "olink":
            parts.append(node.get("targetdoc", ""))
        if node.text:
            parts.append(node.text)
        for child in node:
            walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(el)
    return " ".join("".join(parts).replace("\u200b", "").split())


def _table(root: ET.Element, xml_id: str) -> ET.Element:
    for table in root.iter(NS + "table"):
        if table.get(XML_ID) == xml_id:
            return table
    raise ProfileSourceError(f"table {xml_id} not found in the source")


def _rows(table: ET.Element, section: str) -> list[list[str]]:
    body = table.find(f"{NS}{section}")
    if body is None:
        return []
    rows = []
    for tr in body.findall(f"{NS}tr"):
        cells = [c for c in tr if c.tag in (NS + "td", NS + "th")]
        for c in cells:
            if c.get("colspan", "1") != "1" or c.get("rowspan", "1") != "1":
                raise ProfileSourceError(f"merged cells in {table.get(XML_ID)}: not supported")
        rows.append([_text(c) for c in cells])
    return rows


def _check_header(found: list[str], expected: tuple[str, ...], table: str) -> None:
    if tuple(found) != expected:
        raise ProfileSourceError(f"{table}: header is {found}, expected {list(expected)}")


def parse(source: Path) -> dict[str, object]:
    """Parse the three tables; raise ProfileSourceError when anything is not as expected."""
    raw = source.read_bytes()
    root = ET.fromstring(raw)
    subtitle = root.find(f"{NS}subtitle")
    sub = _text(subtitle) if subtitle is not None else ""
    match = re.search(r"PS3\.15 (\d{4}[a-z]?)", sub)
    if not match:
        raise ProfileSourceError(f"cannot read the edition from the subtitle {sub!r}")

    e11 = _table(root, "table_E.1-1")
    header = _rows(e11, "thead")
    if len(header) != 1:
        raise ProfileSourceError("table_E.1-1: expected one header row")
    _check_header(header[0], tuple(h for h, _ in E11_HEADER), "table_E.1-1")
    rows = _rows(e11, "tbody")
    for row in rows:
        if len(row) != len(E11_HEADER):
            raise ProfileSourceError(f"table_E.1-1: row {row[:2]} has {len(row)} cells")
        for action in row[4:]:
            if action not in ACTIONS:
                raise ProfileSourceError(f"table_E.1-1: unknown action {action!r} in {row[:2]}")
    if len(rows) < E11_MIN_ROWS:
        raise ProfileSourceError(f"table_E.1-1: {len(rows)} rows, floor is {E11_MIN_ROWS}")

    e11a = [r for r in _rows(_table(root, "table_E.1-1a"), "tbody")]
    if len(e11a) < E11A_MIN_ROWS or any(len(r) != 2 for r in e11a):
        raise ProfileSourceError("table_E.1-1a: expected at least 11 two-cell rows")
    codes = {r[0] for r in e11a}
    missing = (ACTIONS - {""}) - codes
    if missing:
        raise ProfileSourceError(f"table_E.1-1a does not define {sorted(missing)}")

    sp = _table(root, "table_E.3.10-1")
    sp_header = _rows(sp, "thead")
    _check_header(sp_header[0] if sp_header else [], SAFE_PRIVATE_HEADER, "table_E.3.10-1")
    safe = _rows(sp, "tbody")
    for row in safe:
        if len(row) != len(SAFE_PRIVATE_HEADER):
            raise ProfileSourceError(f"table_E.3.10-1: row {row[:2]} has {len(row)} cells")
    if len(safe) < SAFE_PRIVATE_MIN_ROWS:
        raise ProfileSourceError(
            f"table_E.3.10-1: {len(safe)} rows, floor is {SAFE_PRIVATE_MIN_ROWS}"
        )

    return {
        "edition": match.group(1),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "rows": rows,
        "actions": e11a,
        "safe_private": safe,
    }


def render(data: dict[str, object], source_name: str) -> str:
    """The Python module text (deterministic: same source, same bytes)."""
    out = [
        f'"""PS3.15 {data["edition"]} Annex E tables, generated by tools/gen_profile.py: '
        "DO NOT EDIT.",
        "",
        f"Source: {source_name} ({data['size']} bytes), the NEMA DocBook of PS3.15.",
        "Regenerate with ``.venv/bin/python tools/gen_profile.py PART15_XML``; the unit test",
        "tests/unit/anonymize/test_table_generator.py fails when this copy differs.",
        '"""',
        "",
        f"EDITION = {data['edition']!r}",
        f"SOURCE_SHA256 = {data['sha256']!r}",
        "",
        "#: Column names of ROWS, in the order of Table E.1-1.",
        f"COLUMNS = {tuple(name for _, name in E11_HEADER)!r}",
        "#: Header labels as printed in the standard (checked by the generator).",
        f"LABELS = {tuple(label for label, _ in E11_HEADER)!r}",
        "",
        "#: Table E.1-1a: action code -> definition.",
        "ACTION_CODES = {",
    ]
    out += [f"    {code!r}: {text!r}," for code, text in data["actions"]]  # type: ignore[attr-defined]
    out += ["}", "", "#: Table E.1-1, one tuple per row, cells in COLUMNS order.", "ROWS = ("]
    out += [f"    {tuple(row)!r}," for row in data["rows"]]  # type: ignore[attr-defined]
    out += [
        ")",
        "",
        "#: Table E.3.10-1 Safe Private Attributes: (element, creator, VR, VM, meaning).",
        "SAFE_PRIVATE = (",
    ]
    out += [f"    {tuple(row)!r}," for row in data["safe_private"]]  # type: ignore[attr-defined]
    out += [")", ""]
    return "\n".join(out)


def generate(source: Path) -> str:
    return render(parse(source), source.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if --out differs")
    args = ap.parse_args(argv)
    try:
        text = generate(args.source)
    except (ProfileSourceError, ET.ParseError, OSError) as exc:
        print(f"gen_profile: {args.source}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"gen_profile: {args.out} is out of date; regenerate it", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"gen_profile: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
