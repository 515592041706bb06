"""``mdm keyserver``: administration of one key server (master key, audit verification)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def keyserver() -> None:
    """Key-server administration (master key, audit verification)."""


@keyserver.command()
@click.option(
    "--master-key",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the key [settings: keyserver.master_key_file].",
)
@click.pass_context
def init(ctx: click.Context, path: Path | None) -> None:
    """Create this server's master key (0600) and its database tables."""
    from mdm.cli import load_settings
    from mdm.errors import ConfigError
    from mdm.keyserver import Database, MasterKey

    settings = load_settings(ctx).keyserver
    target = path or settings.master_key_file
    if target is None:
        raise ConfigError("give --master-key or set keyserver.master_key_file")
    MasterKey.create(target)
    Database(settings.database_url).dispose()
    click.echo(f"master key written to {target}; database {settings.database_url} ready")


@keyserver.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every audit record against the chain; exit 1 naming the first broken record."""
    import json

    from mdm.cli import load_settings
    from mdm.keyserver import open_service

    settings = load_settings(ctx).keyserver
    service = open_service(settings)
    try:
        count = service.verify_audit()
    finally:
        service.db.dispose()
    if as_json:
        click.echo(json.dumps({"ok": True, "records": count, "index": settings.index}))
    else:
        click.echo(f"audit log of key server {settings.index}: {count} records, chain intact")
