"""``mdm serve catalog``: the catalog service (QIDO-RS, file catalog, vault, staging) over mTLS.

The schema must be current: run ``mdm catalog upgrade`` once (or pass ``--upgrade``). Settings
come from the ``[catalog]`` section, ``MDM_CATALOG__*`` variables or the options here.
"""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default=None, help="Address to bind [settings: catalog.host].")
@click.option("--port", type=int, default=None, help="Port [settings: catalog.port].")
@click.option("--database-url", default=None, help="SQLAlchemy URL of the catalog database.")
@click.option(
    "--vault-database-url", default=None, help="Separate database for the identity vault."
)
@click.option("--upgrade", is_flag=True, help="Create or migrate the schema before serving.")
@click.pass_context
def catalog(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    database_url: str | None,
    vault_database_url: str | None,
    upgrade: bool,
) -> None:
    """Run the catalog service."""
    from mdm.cli import load_settings
    from mdm.cli.serve import server_tls, with_options
    from mdm.servers.catalog_app import create_app
    from mdm.servers.run import serve_forever

    settings = with_options(
        load_settings(ctx),
        "catalog",
        host=host,
        port=port,
        database_url=database_url,
        vault_database_url=vault_database_url,
        auto_upgrade=True if upgrade else None,
    )
    cfg = settings.catalog
    app = create_app(settings)
    tls = server_tls(settings)

    def ready(url: str) -> None:
        click.echo(f"catalog listening on {url}", err=True)

    serve_forever(app, tls=tls, host=cfg.host, port=cfg.port, on_ready=ready)
