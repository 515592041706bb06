"""``mdm catalog ...``: administration of the catalog database, run on the catalog host.

``upgrade`` creates or migrates the catalog and vault schemas (Alembic); ``audit verify``
recomputes the hash chain of the audit log and prints its head, which an operator can publish
elsewhere: only a head compared with an earlier copy shows that the tail was cut off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mdm.catalog.db import CatalogDatabases


@click.group()
def catalog() -> None:
    """Catalog administration (schema migrations, audit log)."""


def _databases(ctx: click.Context) -> CatalogDatabases:
    from mdm.catalog.db import CatalogDatabases
    from mdm.cli import load_settings

    cfg = load_settings(ctx).catalog
    return CatalogDatabases.from_settings(cfg)


@catalog.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or migrate the catalog and identity-vault schemas to the newest version."""
    from mdm.catalog import migrations

    dbs = _databases(ctx)
    try:
        migrations.upgrade(dbs)
        click.echo(
            f"catalog schema {migrations.current(dbs.catalog.engine, 'catalog')}, "
            f"vault schema {migrations.current(dbs.vault.engine, 'vault')}"
        )
    finally:
        dbs.dispose()


@catalog.group()
def audit() -> None:
    """The hash-chained audit log of identity reads and ACL changes."""


@audit.command()
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Recompute the chain; exit 1 naming the first altered or missing record."""
    from mdm.catalog import audit as audit_log

    dbs = _databases(ctx)
    try:
        with dbs.vault.session() as s:
            result = audit_log.verify(s)
        click.echo(f"audit log intact: {result.records} records, head {result.head}")
    finally:
        dbs.dispose()
