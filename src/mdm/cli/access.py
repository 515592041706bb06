"""``mdm grant | revoke``: one command changes the catalog ACL and every key of a study.

Levels (ARCHITECTURE.md): 1 = list and download the ciphertext (catalog ``list``, ``read``);
2 = also decrypt (catalog ``decrypt``, which the recall worker copies onto new keys, plus key
``read`` on every key of the study on all key servers); 3 = also the original identity
(catalog ``identity``). ``revoke --level N`` takes away level N and every level above it.
A change that did not reach every part is reported key by key, and the exit status is 1.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from mdm.cli.transfer import JSON_OPTION, open_client

if TYPE_CHECKING:
    from mdm.client import AccessChange

_LEVEL = click.option(
    "--level", type=click.IntRange(1, 3), default=None, help="Access level 1, 2 or 3."
)


def _show(change: AccessChange, verb: str, as_json: bool) -> None:
    keys = change.keys
    if as_json:
        doc = {
            "study": change.study,
            "principal": change.principal,
            "level": change.level,
            "ok": change.ok,
            "catalog": "done" if change.catalog_done else str(change.catalog_error),
            "keys_done": len(keys.done),
            "keys_failed": {k: f"{type(e).__name__}: {e.message}" for k, e in keys.failed.items()},
            "keys_degraded": keys.degraded,
            "files_without_key": change.files_without_key,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{verb} level {change.level} on {change.study} for {change.principal}")
    if change.catalog_error is not None:
        err = change.catalog_error
        click.echo(f"  catalog: FAILED ({type(err).__name__}: {err.message})", err=True)
    else:
        click.echo("  catalog: done")
    if keys.done or keys.failed:
        click.echo(f"  keys: {len(keys.done)} done, {len(keys.failed)} failed")
    for key, exc in sorted(keys.failed.items()):
        click.echo(f"    {key}: {type(exc).__name__}: {exc.message}", err=True)
    for key, problems in sorted(keys.degraded.items()):
        click.echo(f"    {key}: done, but {'; '.join(problems)}")
    if change.files_without_key:
        click.echo(
            f"  {change.files_without_key} file(s) never recalled: their keys will follow the "
            "catalog's decrypt grants when the recall worker creates them"
        )


@click.command()
@click.argument("study")
@click.argument("who")
@_LEVEL
@JSON_OPTION
@click.pass_context
def grant(ctx: click.Context, study: str, who: str, level: int | None, as_json: bool) -> None:
    """Grant WHO (dn:<DN>, fqan:/vo/group, or a bare DN / FQAN) access to STUDY."""
    if level is None:
        raise click.UsageError("say which level: --level 1, 2 or 3")
    with open_client(ctx) as client:
        change = client.grant(study, who, level)
    _show(change, "granted", as_json)
    if not change.ok:
        sys.exit(1)


@click.command()
@click.argument("study")
@click.argument("who")
@_LEVEL
@JSON_OPTION
@click.pass_context
def revoke(ctx: click.Context, study: str, who: str, level: int | None, as_json: bool) -> None:
    """Revoke WHO's access to STUDY from --level (default 1: everything) upwards."""
    with open_client(ctx) as client:
        change = client.revoke(study, who, level or 1)
    _show(change, "revoked", as_json)
    if not change.ok:
        sys.exit(1)
