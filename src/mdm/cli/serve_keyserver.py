"""``mdm serve keyserver --index I``: one key server over mutual TLS.

All n servers run this same command; they differ only in settings (index, database, master
key, admins), given by the settings file, ``MDM_KEYSERVER__*`` variables or the options here.
"""

from __future__ import annotations

import click


@click.command()
@click.option("--index", type=int, default=None, help="Slot of this server (1..n).")
@click.option("--host", default=None, help="Address to bind [settings: keyserver.host].")
@click.option("--port", type=int, default=None, help="Port [settings: keyserver.port].")
@click.option("--database-url", default=None, help="SQLAlchemy URL of this server's database.")
@click.pass_context
def keyserver(
    ctx: click.Context,
    index: int | None,
    host: str | None,
    port: int | None,
    database_url: str | None,
) -> None:
    """Run key server number INDEX (holds share x = INDEX of every key)."""
    from mdm.cli import load_settings
    from mdm.cli.serve import server_tls, with_options
    from mdm.servers.keyserver_app import create_app
    from mdm.servers.run import serve_forever

    settings = with_options(
        load_settings(ctx),
        "keyserver",
        index=index,
        host=host,
        port=port,
        database_url=database_url,
    )
    ks = settings.keyserver
    app = create_app(settings)
    tls = server_tls(settings)

    def ready(url: str) -> None:
        click.echo(f"key server {ks.index} listening on {url}", err=True)

    serve_forever(app, tls=tls, host=ks.host, port=ks.port, on_ready=ready)
