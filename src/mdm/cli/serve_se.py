"""``mdm serve se``: the storage element (WebDAV + WLCG Tape REST API) over mutual TLS.

Two back-ends. Without ``storage.archive_dir`` (the normal case) the SE serves the file catalog
(``catalog.database_url``): catalog ACLs, staging through the catalog queue drained by
``mdm worker recall``, ONLINE files from ``storage.cache_dir`` (``mdm.servers.se_catalog``).
With ``storage.archive_dir`` it serves a disk nearline store instead: that tree is the namespace
(the "tape"), recalls copy into ``storage.cache_dir``, and ``storage.acl_file`` grants
``list``/``read`` (default deny).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mdm.cli import load_settings
from mdm.cli.serve import server_tls, with_options


@click.command("se")
@click.option("--host", default=None, help="Listen address (default: storage.host).")
@click.option("--port", type=int, default=None, help="Listen port (default: storage.port).")
@click.option(
    "--archive-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory holding the nearline files (default: storage.archive_dir).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Disk cache for staged files (default: storage.cache_dir).",
)
@click.option(
    "--acl-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML [[grant]] tables: who may list/read (default: storage.acl_file).",
)
@click.pass_context
def se(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    archive_dir: Path | None,
    cache_dir: Path | None,
    acl_file: Path | None,
) -> None:
    """Run the storage element: WebDAV reads and Tape REST staging of nearline files."""
    from mdm.errors import ConfigError
    from mdm.servers.run import serve_forever
    from mdm.servers.se_app import create_app
    from mdm.storage.grants import Grants
    from mdm.storage.posix import PosixNearline

    settings = with_options(
        load_settings(ctx),
        "storage",
        host=host,
        port=port,
        archive_dir=archive_dir,
        cache_dir=cache_dir,
        acl_file=acl_file,
    )
    server_tls(settings)
    cfg = settings.storage
    archive = cfg.archive_dir
    if archive is None:
        _serve_catalog(settings)
        return
    if not Path(archive).is_dir():
        raise ConfigError(f"archive directory {archive} does not exist", key="archive_dir")
    acl = cfg.acl_file
    grants = Grants.load(acl) if acl is not None else Grants()
    if acl is None:
        click.echo("warning: no storage.acl_file: every request will be refused", err=True)
    backend = PosixNearline(
        Path(archive),
        Path(cfg.cache_dir),
        grants,
        pin_lifetime=cfg.pin_lifetime_seconds,
        release_grace=cfg.release_grace_seconds,
        cache_limit_bytes=cfg.cache_limit_bytes,
        retry_after=cfg.retry_after_seconds,
    )
    backend.start()
    try:
        serve_forever(
            create_app(backend, settings),
            tls=server_tls(settings),
            host=cfg.host,
            port=cfg.port,
            on_ready=lambda url: click.echo(f"storage element listening on {url}", err=True),
        )
    finally:
        backend.stop()


def _serve_catalog(settings: Any) -> None:
    """The catalog-backed SE, with a thread evicting expired copies every few seconds."""
    import threading

    from mdm.servers.run import serve_forever
    from mdm.servers.se_app import create_app
    from mdm.servers.se_catalog import CatalogStorage

    cfg = settings.storage
    backend = CatalogStorage(settings)
    stop = threading.Event()

    def evict() -> None:
        while not stop.wait(5.0):
            try:
                backend.evict_expired()
            except Exception as exc:  # keep serving; the next round retries
                click.echo(f"warning: eviction failed: {exc}", err=True)

    thread = threading.Thread(target=evict, name="mdm-se-evict", daemon=True)
    thread.start()
    try:
        serve_forever(
            create_app(backend, settings),
            tls=server_tls(settings),
            host=cfg.host,
            port=cfg.port,
            on_ready=lambda url: click.echo(f"storage element listening on {url}", err=True),
        )
    finally:
        stop.set()
        thread.join()
        backend.close()
