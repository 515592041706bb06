"""``mdm status``: is each part of the site answering? Catalog, storage element, n key servers.

A service that answers 401/403 counts as up (it answered; the caller's rights are another
matter). The exit status is 1 when the catalog or the SE is down, or when key servers are
configured and fewer than k of them answer (keys could then not be rebuilt).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

import click

from mdm.cli.transfer import JSON_OPTION, open_client


@click.command()
@JSON_OPTION
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Health of the catalog, storage element and key servers."""
    with open_client(ctx) as client:
        report = client.status()
    servers = report["keyservers"]
    up = sum(bool(s.get("ok")) for s in servers)
    keys_ok = not servers or up >= int(report["threshold"])  # none listed: a level-1 client
    healthy = bool(report["catalog"]["ok"] and report["storage"]["ok"] and keys_ok)
    if as_json:
        click.echo(json.dumps({**report, "healthy": healthy}, indent=2, default=str))
    else:
        rows = []
        for name in ("catalog", "storage"):
            part = report[name]
            detail = part.get("error") or f"{part.get('latency_ms', '')} ms"
            rows.append((name, part["url"] or "-", state(part["ok"]), str(detail)))
        for s in servers:
            detail = s.get("detail") or s.get("error") or ""
            if s.get("ok"):
                detail = f"{s.get('latency_ms', 0):.0f} ms, {detail}"
            rows.append((f"key server {s.get('slot', '?')}", s.get("url", "-"),
                         state(bool(s.get("ok"))), str(detail)))  # fmt: skip
        print_table("MDM site status", ("part", "url", "state", "detail"), rows)
        click.echo(f"{up} of {len(servers)} key servers up, {report['threshold']} needed")
    if not healthy:
        sys.exit(1)


def state(ok: bool) -> str:
    """A service's up/DOWN cell in rich markup (shared with ``mdm keys status``)."""
    return "[green]up[/]" if ok else "[bold red]DOWN[/]"


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a rich table (cells may hold rich markup) to the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)
