"""``mdm serve PART``: run one MDM server process (each part in its own module, loaded lazily)."""

from __future__ import annotations

import click

from mdm.cli import LazyGroup

SERVERS = {
    "keyserver": "serve_keyserver:keyserver",
    "catalog": "serve_catalog:catalog",
    "se": "serve_se:se",
}


@click.group(cls=LazyGroup, lazy=SERVERS, package="mdm.cli")
def serve() -> None:
    """Run an MDM server: keyserver, catalog or se (storage element)."""
