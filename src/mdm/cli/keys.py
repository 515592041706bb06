"""``mdm keys``: register, fetch and manage split keys on the n key servers.

Thin commands over ``mdm.keystore.KeyStore`` (the settings' ``[keystore]`` servers and
``[tls]`` credential). Keys are read from and written to files (mode 0600), never printed
unless asked with ``--hex``; ``--json`` gives machine-readable output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mdm.cli.status import print_table, state

if TYPE_CHECKING:
    from mdm.keystore import KeyStore

_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
_KEY_ID = click.argument("key_id")


@contextmanager
def _store(ctx: click.Context, quorum: int | None = None) -> Iterator[KeyStore]:
    import dataclasses

    from mdm.cli import load_settings
    from mdm.keystore import KeyStore

    settings = load_settings(ctx)
    ks_settings = settings.keystore
    if quorum is not None:
        ks_settings = dataclasses.replace(ks_settings, write_quorum=quorum)
    with KeyStore(ks_settings, tls=settings.tls) as store:
        yield store


def _problems(problems: dict[int, Any]) -> dict[str, str]:
    return {str(slot): str(p) for slot, p in sorted(problems.items())}


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def _slots(slots: Iterable[int], none: str = "") -> str:
    return ", ".join(map(str, slots)) or none


def _with_problems(summary: str, problems: dict[int, Any]) -> str:
    """The one-line summary, then one indented line per server that failed."""
    return summary + "".join(f"\n  {p}" for p in problems.values())


def _write_private(path: Path, key: bytes, *, overwrite: bool) -> None:
    """``write_key_file`` (mode 0600, hex), its refusals as usage errors (exit status 2)."""
    from mdm.crypto.keyfile import write_key_file
    from mdm.errors import UsageError

    try:
        write_key_file(path, key, overwrite=overwrite)
    except UsageError as exc:
        raise click.UsageError(exc.message) from None


@click.group()
def keys() -> None:
    """Register, fetch and manage split keys on the key servers."""


@keys.command()
@_KEY_ID
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File with the key (raw bytes, or hex); with --generate, written there.",
)
@click.option("--generate", is_flag=True, help="Make a new random 32-byte key into --key-file.")
@click.option("--read", "readers", multiple=True, help="Principal (dn:… or fqan:…) with read.")
@click.option("--admin", "admins", multiple=True, help="Principal with admin right.")
@click.option("--quorum", type=int, default=None, help="Acks needed [default: k+1].")
@_JSON
@click.pass_context
def register(
    ctx: click.Context,
    key_id: str,
    key_file: Path,
    generate: bool,
    readers: tuple[str, ...],
    admins: tuple[str, ...],
    quorum: int | None,
    as_json: bool,
) -> None:
    """Split a key and store one share on each key server."""
    from mdm.keystore import new_key

    if generate:
        key = new_key()
        _write_private(key_file, key, overwrite=False)
    else:
        from mdm.crypto.keyfile import read_key_file

        key = read_key_file(key_file)
    acl: dict[str, list[str]] = {}
    for p in readers:
        acl.setdefault(p, []).append("read")
    for p in admins:
        acl.setdefault(p, []).append("admin")
    with _store(ctx, quorum) as ks:
        res = ks.register(key_id, key, acl)
    _emit(
        as_json,
        {"key_id": key_id, "acked": list(res.acked), "problems": _problems(res.problems)},
        _with_problems(f"registered {key_id} on servers {_slots(res.acked)}", res.problems),
    )


@keys.command()
@_KEY_ID
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the key to this file (0600).",
)
@click.option("--hex", "as_hex", is_flag=True, help="Print the key in hex (careful).")
@click.option("--check-all", is_flag=True, help="Wait for every server and check its share.")
@_JSON
@click.pass_context
def fetch(
    ctx: click.Context, key_id: str, out: Path | None, as_hex: bool, check_all: bool, as_json: bool
) -> None:
    """Rebuild a key from k verified shares; names servers that failed or lied."""
    if out is None and not as_hex:
        raise click.UsageError("give --out FILE or --hex")
    with _store(ctx) as ks:
        got = ks.retrieve(key_id, wait_all=check_all)
    if out is not None:
        _write_private(out, got.key, overwrite=True)
    data = {"key_id": key_id, "used": list(got.used), "problems": _problems(got.problems)}
    if as_hex:
        data["key"] = got.key.hex()
    text = (got.key.hex() + "\n" if as_hex else "") + _with_problems(
        f"key {key_id} rebuilt from servers {_slots(got.used)}", got.problems
    )
    _emit(as_json, data, text)


@keys.command()
@_KEY_ID
@_JSON
@click.pass_context
def acl(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show the ACL most key servers hold."""
    with _store(ctx) as ks:
        res = ks.get_acl(key_id)
    _show_acl(res, as_json)


def _show_acl(res: Any, as_json: bool) -> None:
    data = {
        "key_id": res.key_id,
        "version": res.version,
        "digest": res.digest,
        "entries": res.entries,
        "servers": list(res.acked),
        "problems": res.problems,
    }
    lines = [f"ACL of {res.key_id}: version {res.version} on servers {_slots(res.acked)}"]
    lines += [f"  {p}: {', '.join(r)}" for p, r in sorted(res.entries.items())] or ["  (empty)"]
    lines += [f"  ! {p}" for p in res.problems.values()]
    _emit(as_json, data, "\n".join(lines))


@keys.command()
@_KEY_ID
@click.argument("principal")
@click.option(
    "--right",
    "rights",
    multiple=True,
    type=click.Choice(["read", "admin"]),
    default=("read",),
    show_default=True,
)
@_JSON
@click.pass_context
def grant(
    ctx: click.Context, key_id: str, principal: str, rights: tuple[str, ...], as_json: bool
) -> None:
    """Give PRINCIPAL (dn:<DN> or fqan:/vo/group[/Role=r]) rights on a key."""
    with _store(ctx) as ks:
        _show_acl(ks.grant(key_id, principal, rights), as_json)


@keys.command()
@_KEY_ID
@click.argument("principal")
@click.option(
    "--right",
    "rights",
    multiple=True,
    type=click.Choice(["read", "admin"]),
    help="Only these rights [default: all].",
)
@_JSON
@click.pass_context
def revoke(
    ctx: click.Context, key_id: str, principal: str, rights: tuple[str, ...], as_json: bool
) -> None:
    """Take rights away; effective once n-k+1 servers applied it."""
    with _store(ctx) as ks:
        _show_acl(ks.revoke(key_id, principal, rights or None), as_json)


@keys.command()
@_KEY_ID
@_JSON
@click.pass_context
def repair(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Re-create missing or bad shares (key-server admins; rebuilds the key here)."""
    with _store(ctx) as ks:
        res = ks.repair(key_id)
    _emit(
        as_json,
        {"key_id": key_id, "repaired": list(res.repaired), "problems": _problems(res.problems)},
        _with_problems(
            f"repaired {key_id} on servers {_slots(res.repaired, '(none)')}", res.problems
        ),
    )


@keys.command()
@_JSON
@click.pass_context
def scan(ctx: click.Context, as_json: bool) -> None:
    """List keys whose shares or ACL versions diverge across servers (admins)."""
    with _store(ctx) as ks:
        divergent, problems = ks.scan()
    if as_json:
        _emit(
            True,
            {
                "divergent": [
                    {
                        "key_id": d.key_id,
                        "missing": list(d.missing),
                        "differing": list(d.differing),
                        "acl_versions": d.acl_versions,
                    }
                    for d in divergent
                ],
                "problems": _problems(problems),
            },
            "",
        )
        return
    print_table(
        f"{len(divergent)} divergent key(s)",
        ("key id", "missing on", "differs on", "ACL versions"),
        [
            (
                d.key_id,
                _slots(d.missing),
                _slots(d.differing),
                " ".join(f"{s}:v{v}" for s, v in sorted(d.acl_versions.items())),
            )
            for d in divergent
        ],
    )
    for p in problems.values():
        click.echo(f"  ! {p}")


@keys.command()
@_JSON
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """A table of the n key servers: reachable, slot, latency."""
    with _store(ctx) as ks:
        rows = ks.status()
        k, quorum = ks.k, ks.write_quorum
    up = sum(r.ok for r in rows)
    if as_json:
        _emit(
            True,
            {
                "k": k,
                "n": len(rows),
                "write_quorum": quorum,
                "up": up,
                "servers": [vars(r) for r in rows],
            },
            "",
        )
    else:
        print_table(
            f"key servers: {up}/{len(rows)} up, k={k}, register quorum={quorum}",
            ("slot", "url", "state", "ms", "detail"),
            [(str(r.slot), r.url, state(r.ok), f"{r.latency_ms:.1f}", r.detail) for r in rows],
        )
    if up < k:
        ctx.exit(1)
