"""A tiny TOML writer for the settings files ``mdm init`` and ``mdm up`` write.

Only what MDM settings hold: tables of strings, numbers, booleans and lists of those, nested
tables (``[dicom.pacs.hospital]``). The standard library reads TOML (``tomllib``) but cannot
write it, and a settings file is too small to justify a dependency.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    # A JSON string is a valid TOML basic string (same escapes for the characters JSON emits).
    return json.dumps(str(v), ensure_ascii=False)


def dumps(doc: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text of *doc*: plain keys first, then one ``[table]`` per nested mapping."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, v in doc.items():
        if isinstance(v, Mapping):
            tables.append((f"{prefix}{key}", v))
        elif v is not None:
            lines.append(f"{key} = {value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        body = dumps(table, prefix=f"{name}.")
        out += f"\n[{name}]\n{body}"
    return out


__all__ = ["dumps", "value"]
