"""The catalog (layer 2): file catalog, de-identified metadata catalog, identity vault, staging.

Core functions take a SQLAlchemy ``Session`` and a ``Caller`` and never open sessions or
transactions themselves: servers and workers do, through ``db.Database.session``. Modules:

- ``db``: engines (SQLite WAL / PostgreSQL) and the one session context manager;
- ``models`` and ``migrations``: the schema and its Alembic history (``migrations.upgrade``);
- ``access``: the one authorisation layer (directory ACLs inherited downward, SQL scoping);
- ``files``: LFNs, GUIDs, checksums, replicas;  ``metadata`` + ``qido``: QIDO-RS search;
- ``vault``: original identities and the pseudonym map;  ``audit``: the hash-chained log;
- ``staging``: bulk staging requests claimed by recall workers;
- ``registration``: one instance into the file catalog, the metadata catalog and the vault.

Importing the package is cheap on purpose: ``mdm.catalog.qido`` (pure query parsing) is used by
the CLI without loading SQLAlchemy; the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Caller": "mdm.catalog.access",
    "CatalogDatabases": "mdm.catalog.db",
    "Database": "mdm.catalog.db",
    "ReplicaState": "mdm.catalog.models",
    "Right": "mdm.catalog.models",
    "StageState": "mdm.catalog.models",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mdm.catalog' has no attribute {name!r}")
