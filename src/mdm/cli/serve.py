"""``mdm serve PART``: run one MDM server process (each part in its own module, loaded lazily)."""

from __future__ import annotations

import dataclasses
from typing import Any

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


def server_tls(settings: Any) -> Any:
    """The TLS settings a server runs with; refuse to start without them.

    Every MDM decision starts from the caller's verified certificate, so a server without TLS
    could only ever answer 401: rather than listen in clear text, say what is missing.
    """
    from mdm.errors import ConfigError

    tls = settings.tls
    missing = [name for name in ("cert", "ca_dir") if getattr(tls, name) is None]
    if missing:
        raise ConfigError(
            f"a server needs mutual TLS: set tls.{' and tls.'.join(missing)} "
            "(mdm pki makes test certificates)",
            key="tls",
        )
    return tls


def with_options(settings: Any, section: str, **options: Any) -> Any:
    """*settings* with the command-line *options* that were given (not None) in *section*.

    Options left out on the command line keep the value from the file or environment, so
    every ``mdm serve`` option reads ``[settings: section.name]`` the same way.
    """
    given = {name: value for name, value in options.items() if value is not None}
    if not given:
        return settings
    part = dataclasses.replace(getattr(settings, section), **given)
    return dataclasses.replace(settings, **{section: part})
