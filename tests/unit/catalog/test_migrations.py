"""The Alembic history produces exactly the schema the models describe (both parts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mdm.catalog.db import CatalogDatabases
from mdm.catalog.migrations import PARTS, current, upgrade


def diff(dbs: CatalogDatabases, part: str) -> list[object]:
    metadata = PARTS[part][2]
    engine = dbs.catalog.engine if part == "catalog" else dbs.vault.engine
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, type_, _p: type_ != "table" or name in metadata.tables,
            },
        )
        return list(compare_metadata(ctx, metadata))


@pytest.mark.parametrize("split", [False, True], ids=["one-database", "separate-vault"])
def test_migrations_and_models_agree(tmp_path: Path, split: bool) -> None:
    vault = f"sqlite:///{tmp_path}/vault.db" if split else None
    dbs = CatalogDatabases(f"sqlite:///{tmp_path}/catalog.db", vault)
    assert current(dbs.catalog.engine, "catalog") is None
    upgrade(dbs)
    upgrade(dbs)  # running it again is a no-op
    assert current(dbs.catalog.engine, "catalog") == "c0001"
    assert current(dbs.vault.engine, "vault") == "v0001"
    assert diff(dbs, "catalog") == []
    assert diff(dbs, "vault") == []
    dbs.dispose()
