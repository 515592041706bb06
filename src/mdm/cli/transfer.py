"""``mdm stage | get | cat``: move files out of MDM, at level 1 (ciphertext) or 2 (decrypted).

Thin over ``mdm.client.Client``: ``stage`` is the Tape REST API, ``get`` stages what is
NEARLINE, downloads in parallel, verifies checksums against the catalog, fetches keys from k of
n key servers and decrypts (``--ciphertext`` stops before the keys), ``cat`` decrypts one file
to standard output reading only the chunks it needs. Progress bars show rate and ETA on a
terminal; ``--json`` prints the outcome for scripts. The exit status is 1 if any file failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mdm.client import Client, GetResult

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@contextmanager
def open_client(ctx: click.Context, concurrency: int = 4) -> Iterator[Client]:
    """A ``Client`` from the settings; like grid tools, ``X509_USER_PROXY`` (or
    ``/tmp/x509up_u<uid>``) and ``X509_CERT_DIR`` are used when the settings name none."""
    from mdm.cli import load_settings
    from mdm.client import Client

    settings = load_settings(ctx)
    tls = settings.tls
    if tls.proxy is None and tls.cert is None:
        default = Path(f"/tmp/x509up_u{os.getuid()}")  # noqa: S108 - the grid's own default
        env = os.environ.get("X509_USER_PROXY")
        proxy = Path(env) if env else (default if default.exists() else None)
        tls = dataclasses.replace(tls, proxy=proxy)
    if tls.ca_dir is None and os.environ.get("X509_CERT_DIR"):
        tls = dataclasses.replace(tls, ca_dir=Path(os.environ["X509_CERT_DIR"]))
    with Client(dataclasses.replace(settings, tls=tls), concurrency=concurrency) as client:
        yield client


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
        disable=not sys.stderr.isatty(),
        console=_stderr(),
    )


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--no-wait", is_flag=True, help="Submit the request and print its id.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait.")
@JSON_OPTION
@click.pass_context
def stage(ctx: click.Context, paths: tuple[str, ...], no_wait: bool, timeout: float,
          as_json: bool) -> None:  # fmt: skip
    """Stage files (LFNs, GUIDs or study/series directories) from nearline to disk."""
    with open_client(ctx) as client, _progress() as bar:
        lfns = [str(e["path"]) for p in paths for e in client.files(p)]
        task = bar.add_task("staging", total=len(lfns))

        def on_poll(states: Mapping[str, str]) -> None:
            bar.update(task, completed=sum(s in ("COMPLETED", "FAILED") for s in states.values()))

        request_ids, states = client.stage(lfns, wait=not no_wait, timeout=timeout, on_poll=on_poll)
        bar.update(task, completed=len(lfns) if not no_wait else 0)
    failed = {p: s for p, s in states.items() if s.startswith("FAILED")}
    if as_json:
        click.echo(json.dumps({"request_ids": list(request_ids), "files": states}, indent=2))
    else:
        for request_id in request_ids:
            click.echo(f"request {request_id}")
        counts: dict[str, int] = {}
        for s in states.values():
            counts[s.split(":")[0]] = counts.get(s.split(":")[0], 0) + 1
        click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for p, s in sorted(failed.items()):
            click.echo(f"  {p}: {s}", err=True)
    if failed:
        sys.exit(1)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "-d", "--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
    show_default=True, help="Directory to write into (<study>/<series>/<instance>.dcm).",
)  # fmt: skip
@click.option("--ciphertext", is_flag=True, help="Level 1: keep the encrypted files (.mdm).")
@click.option("-j", "--jobs", default=4, show_default=True, help="Files in parallel.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for staging.")
@JSON_OPTION
@click.pass_context
def get(ctx: click.Context, paths: tuple[str, ...], dest: Path, ciphertext: bool, jobs: int,
        timeout: float, as_json: bool) -> None:  # fmt: skip
    """Download (and decrypt) files: LFNs, GUIDs, or whole study/series directories."""
    from mdm.client import GetEvents

    with open_client(ctx, concurrency=jobs) as client, _progress() as bar:
        tasks: dict[str, Any] = {}

        def on_plan(files: int) -> None:
            tasks["files"] = files
            tasks["stage"] = bar.add_task("staging", total=files)
            tasks["bytes"] = bar.add_task("download", total=None)

        def on_total(nbytes: int) -> None:
            bar.update(tasks["stage"], completed=tasks["files"])
            bar.update(tasks["bytes"], total=nbytes or None)

        def on_stage(states: Mapping[str, str]) -> None:
            done = sum(s in ("COMPLETED", "FAILED") for s in states.values())
            bar.update(tasks["stage"], completed=done)

        events = GetEvents(
            on_plan=on_plan,
            on_total=on_total,
            on_stage=on_stage,
            on_bytes=lambda n: bar.advance(tasks["bytes"], n),
        )
        results = client.get(list(paths), dest, decrypt=not ciphertext, timeout=timeout,
                             events=events)  # fmt: skip
    _report(results, as_json)
    if any(not r.ok for r in results):
        sys.exit(1)


def _report(results: list[GetResult], as_json: bool) -> None:
    if as_json:
        out = [
            {
                "lfn": r.lfn,
                "dest": str(r.dest) if r.dest else None,
                "bytes": r.plaintext_bytes or r.ciphertext_bytes,
                "seconds": round(r.seconds, 3),
                "staged": r.staged,
                "error": f"{type(r.error).__name__}: {r.error.message}" if r.error else None,
            }
            for r in results
        ]
        click.echo(json.dumps(out, indent=2))
        return
    ok = [r for r in results if r.ok]
    total = sum(r.plaintext_bytes or r.ciphertext_bytes for r in ok)
    click.echo(f"{len(ok)} of {len(results)} files, {total} bytes")
    for r in results:
        if r.error is not None:
            click.echo(f"  FAILED {r.lfn}: {type(r.error).__name__}: {r.error.message}", err=True)


@click.command()
@click.argument("lfn")
@click.option("--offset", default=0, show_default=True, help="First plaintext byte.")
@click.option("--length", type=int, default=None, help="Bytes to write (default: to the end).")
@click.pass_context
def cat(ctx: click.Context, lfn: str, offset: int, length: int | None) -> None:
    """Decrypt one ONLINE file to standard output (only the chunks needed are read)."""
    out = sys.stdout.buffer
    with open_client(ctx) as client, client.open(lfn) as fh:
        fh.seek(offset)
        remaining = fh.size - offset if length is None else length
        while remaining > 0:
            block = fh.read(min(remaining, 1 << 20))
            if not block:
                break
            out.write(block)
            remaining -= len(block)
    out.flush()
