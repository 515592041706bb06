"""The Alembic history produces exactly the schema the models describe (both parts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mdm.catalog.db import CatalogDatabases
from mdm.catalog.migrations import PARTS, current, upgrade, upgrade_engine


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
    assert current(dbs.catalog.engine, "catalog") == "c0002"
    assert current(dbs.vault.engine, "vault") == "v0001"
    assert diff(dbs, "catalog") == []
    assert diff(dbs, "vault") == []
    dbs.dispose()


def test_c0002_keeps_the_staging_queue_of_a_c0001_catalog(tmp_path: Path) -> None:
    """An existing catalog upgraded for per-request pins keeps its requests: their files pin
    for the default lifetime (no diskLifetime recorded) and none is released."""
    from sqlalchemy import text

    from mdm.catalog.models import StageFile, StageRequest

    dbs = CatalogDatabases(f"sqlite:///{tmp_path}/catalog.db")
    upgrade_engine(dbs.catalog.engine, "catalog", "c0001")
    request_row = (
        "INSERT INTO st_request (id, caller, created) "
        "VALUES ('r1', 'dn:x', '2026-11-22 10:00:00.000000')"
    )
    file_row = (
        "INSERT INTO st_file (request_id, path, study_uid, series_uid, state, attempts) "
        "VALUES ('r1', '/dicom/1/2/3', '1', '2', 'COMPLETED', 0)"
    )
    with dbs.catalog.engine.begin() as conn:
        conn.execute(text(request_row))
        conn.execute(text(file_row))
    upgrade(dbs)
    assert current(dbs.catalog.engine, "catalog") == "c0002"
    with dbs.catalog.session() as s:
        request = s.get(StageRequest, "r1")
        assert request is not None
        assert request.disk_lifetime is None
        (f,) = s.query(StageFile).all()
        assert (f.path, f.released) == ("/dicom/1/2/3", None)
    assert diff(dbs, "catalog") == []
    dbs.dispose()
