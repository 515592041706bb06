"""Alembic environment: run programmatically by ``mdm.catalog.migrations`` (no alembic.ini)."""

from __future__ import annotations

from alembic import context

config = context.config
engine = config.attributes["engine"]

metadata = config.attributes["metadata"]


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Each history owns only its own tables: the other part (and its version table) may share
    # the database and must never show up as "tables to drop".
    return type_ != "table" or name in metadata.tables


with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=include_name,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        compare_type=True,
    )
    context.run_migrations()
