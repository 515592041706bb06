"""Alembic migrations of the catalog and vault schemas, applied by ``upgrade(databases)``.

Two version histories share one ``env.py``: ``versions_catalog`` (table ``alembic_version``) for
the catalog database and ``versions_vault`` (table ``alembic_version_vault``) for the identity
vault, so the vault can move to its own database without renumbering anything. When both live in
the same database the two histories simply coexist there.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

from mdm.catalog.models import Base, VaultBase
from mdm.errors import ConfigError, MDMError

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData

    from mdm.catalog.db import CatalogDatabases
    from mdm.settings import CatalogSettings

HERE = Path(__file__).resolve().parent

#: part -> (versions directory, version table, metadata the migrations must produce)
PARTS: dict[str, tuple[str, str, MetaData]] = {
    "catalog": ("versions_catalog", "alembic_version", Base.metadata),
    "vault": ("versions_vault", "alembic_version_vault", VaultBase.metadata),
}


def _config(part: str, engine: Engine | None) -> Config:
    versions, table, metadata = PARTS[part]
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(HERE / versions))
    cfg.attributes["engine"] = engine
    cfg.attributes["version_table"] = table
    cfg.attributes["metadata"] = metadata
    return cfg


def upgrade_engine(engine: Engine, part: str, revision: str = "head") -> None:
    """Bring one part's schema in *engine* up to *revision*."""
    command.upgrade(_config(part, engine), revision)


def upgrade(databases: CatalogDatabases, revision: str = "head") -> None:
    """Create or migrate the catalog and the vault schemas to the newest version."""
    upgrade_engine(databases.catalog.engine, "catalog", revision)
    upgrade_engine(databases.vault.engine, "vault", revision)


def current(engine: Engine, part: str) -> str | None:
    """The revision *part* is at in *engine* (``None``: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": PARTS[part][1]})
        return ctx.get_current_revision()


@cache
def head(part: str) -> str:
    """The newest revision of *part* this code ships (what ``upgrade`` migrates to)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_config(part, None)).get_current_head())


def require_current(databases: CatalogDatabases) -> None:
    """Refuse to run on a catalog or vault schema other than this code's (``ConfigError``
    naming both revisions and the fix), before a query fails on a missing column halfway
    through a request or a recall batch."""
    for part, engine in (("catalog", databases.catalog.engine), ("vault", databases.vault.engine)):
        have, want = current(engine, part), head(part)
        if have != want:
            state = f"at revision {have}" if have else "not created"
            raise ConfigError(
                f"the {part} database schema is {state}; this version of MDM needs {want}: run "
                "`mdm catalog upgrade` with the same settings first (or set "
                "catalog.auto_upgrade for the catalog service)",
                key="catalog.database_url" if part == "catalog" else "catalog.vault_database_url",
            )


def open_current(cfg: CatalogSettings) -> CatalogDatabases:
    """The databases of *cfg*, checked to be at this code's schema (``require_current``):
    what the worker, the storage element, the catalog service and ``mdm register`` open."""
    from mdm.catalog.db import CatalogDatabases

    databases = CatalogDatabases.from_settings(cfg)
    try:
        require_current(databases)
    except MDMError:
        databases.dispose()
        raise
    return databases
