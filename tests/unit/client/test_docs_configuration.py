"""docs/configuration.md documents every setting, so the reference cannot fall behind the code."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from mdm.settings import PacsSettings, Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def _sections() -> list[tuple[str, type]]:
    hints = typing.get_type_hints(Settings)
    out = [(f.name, hints[f.name]) for f in dataclasses.fields(Settings)]
    return [*out, ("dicom.pacs.NAME", PacsSettings)]


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = DOC.read_text()
    missing = []
    for section, cls in _sections():
        header = f"## `[{section}]`" if "." not in section else f"### `[{section}]`"
        if header not in text:
            missing.append(f"[{section}]")
            continue
        body = text.split(header, 1)[1].split("\n#", 1)[0]
        missing += [
            f"{section}.{f.name}" for f in dataclasses.fields(cls) if f"| `{f.name}` |" not in body
        ]
    assert missing == [], f"document these settings in docs/configuration.md: {missing}"
