"""Layers import only downward (ARCHITECTURE.md, STYLE C2), proved on the source, not trusted.

foundation (0) <- pure libraries (1) <- state (2) <- access (3) <- processes (4) <- entry (5).
The access layer (client library, key-store client) may not import state either: a researcher's
laptop installs the client without SQLAlchemy or Starlette.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mdm"

LAYERS: list[tuple[str, int]] = [
    ("mdm.cli", 5),
    ("mdm.__main__", 5),
    ("mdm.demo", 5),
    ("mdm.servers", 4),
    ("mdm.workers", 4),
    ("mdm.client", 3),
    ("mdm.keystore", 3),
    ("mdm.catalog", 2),
    ("mdm.keyserver", 2),
    ("mdm.crypto", 1),
    ("mdm.shamir", 1),
    ("mdm.ssss", 1),
    ("mdm.pki", 1),
    ("mdm.dicom", 1),
    ("mdm.storage", 1),
    ("mdm.errors", 0),
    ("mdm.settings", 0),
    ("mdm.types", 0),
    ("mdm._log", 0),
    ("mdm.memo", 0),
    ("mdm.acl", 0),
    ("mdm", 0),
]
ALLOWED = {0: {0}, 1: {0, 1}, 2: {0, 1, 2}, 3: {0, 1, 3}, 4: {0, 1, 2, 3, 4}, 5: {0, 1, 2, 3, 4, 5}}
SERVER_PACKAGES = ("starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg")


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
    return found


def test_every_module_imports_only_downward() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        mine = layer_of(module)
        for target in imports_of(path, module):
            if target != "mdm" and not target.startswith("mdm."):
                continue
            if target == "mdm":
                continue
            theirs = layer_of(target)
            if theirs not in ALLOWED[mine]:
                problems.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert not problems, "\n".join(problems)


def test_layer_map_rejects_an_upward_import() -> None:
    # The check above must be able to fail: a library importing a server is caught.
    assert 4 not in ALLOWED[layer_of("mdm.crypto")]
    assert 2 not in ALLOWED[layer_of("mdm.client")]


@pytest.mark.parametrize(
    "module",
    [
        "mdm",
        "mdm.errors",
        "mdm.settings",
        "mdm.acl",
        "mdm.crypto",
        "mdm.shamir",
        "mdm.ssss",
        "mdm.pki",
        "mdm.client",
        "mdm.keystore",
        "mdm.cli",
    ],
)
def test_library_modules_pull_in_no_server_package(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {SERVER_PACKAGES!r}"
        " or m.startswith(('mdm.servers', 'mdm.catalog', 'mdm.workers', 'mdm.keyserver'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} pulled in {out.stdout.strip()}"
