"""``mdm init`` writes a settings file for a site; ``mdm up`` runs a whole local grid.

``mdm init`` documents every setting: the file lists each section and key of
``mdm.settings.Settings`` with its default, commented out, so it is valid as written and the
operator uncomments what the site changes (docs/configuration.md explains each key). It is
generated from the dataclasses themselves, so it can never miss a setting.

``mdm up`` starts the local grid of ``mdm demo`` (test PKI, catalog on SQLite, 5 key servers
with k = 3, the storage element, the recall worker and a PACS) in a directory that stays, loads
and registers the synthetic hospital unless ``--empty``, writes one settings file per person
grants the demo's access levels (docs/client.md), and keeps everything running until interrupted.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import threading
import time
import typing
from pathlib import Path
from typing import Any

import click


def settings_template() -> str:
    """The text ``mdm init`` writes: every setting, commented, with its default."""
    from mdm.demo.toml import value
    from mdm.settings import Settings

    lines = [
        "# MDM settings (TOML). Precedence: defaults < this file < MDM_<SECTION>__<KEY>",
        "# environment variables < command-line options. Relative paths are relative to this",
        "# file. Uncomment and change what this site needs; docs/configuration.md says why.",
    ]
    for section in dataclasses.fields(Settings):
        cls = typing.get_type_hints(Settings)[section.name]
        lines += ["", f"[{section.name}]"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default: Any = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:  # pragma: no cover - every setting has a default
                default = None
            if isinstance(default, dict):
                lines.append(f"# [{section.name}.{f.name}.NAME] tables, see docs/configuration.md")
                continue
            shown = "" if default is None else value(list(default) if isinstance(default, tuple)
                                                     else str(default) if isinstance(default, Path)
                                                     else default)  # fmt: skip
            kind = str(hints[f.name]).replace("pathlib.Path", "path").replace(" | None", "")
            if default is None:
                lines.append(f"# {f.name} =     ({kind}; unset by default)")
            else:
                lines.append(f"# {f.name} = {shown}")
    return "\n".join(lines) + "\n"


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="mdm.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a settings file for a site (every setting, commented, with its default)."""
    from mdm.settings import Settings

    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; use --force to overwrite it")
    path.write_text(settings_template())
    Settings.load(path, environ={})  # the file we wrote must load as it is
    click.echo(f"wrote {path}: edit it, then run e.g. 'mdm --settings {path} status'")


@click.command()
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    default=Path("mdm-grid"), show_default=True, help="Where the grid keeps its state.",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Remove an existing grid directory first.")
@click.option("--pacs", type=click.Choice(["auto", "orthanc", "qrscp"]), default="auto",
              show_default=True, help="PACS: Orthanc when installed (auto), or qrscp.")  # fmt: skip
@click.option("--empty", is_flag=True, help="No synthetic hospital and no grants.")
def up(directory: Path, force: bool, pacs: str, empty: bool) -> None:
    """Start a complete local grid on loopback until interrupted."""
    from mdm.demo.grid import Grid
    from mdm.demo.hospital import Hospital

    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise click.ClickException(f"{directory} is not empty; use --force to replace it")
        shutil.rmtree(directory)
    t0 = time.monotonic()

    def say(msg: str) -> None:
        click.echo(f"{time.monotonic() - t0:6.1f}s  {msg}")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Grid(directory.resolve(), pacs_kind=pacs, say=say) as grid:
        for part, why in grid.missing.items():
            click.echo(f"warning: {part} is not running: {why}", err=True)
        if not empty:
            hospital = Hospital()
            say(f"hospital: {hospital.load(grid)} instances in the PACS")
            if not grid.missing:
                from mdm.client import Client
                from mdm.demo.story import grant_demo_access

                done = hospital.register(grid)
                say(f"hospital: {done['created']} files registered (NEARLINE)")
                with Client(grid.settings_for("manager")) as client:
                    studies, group = grant_demo_access(grid, client)
                say(f"granted on {len(studies)} studies: gridUser level 1, {group} level 2, "
                    "physician level 3 on the first")  # fmt: skip
        files = grid.write_settings()
        click.echo("\nThe grid is up. One settings file per person:")
        for name, path in files.items():
            click.echo(f"  {name:<11} {path}")
        mgr, res = files["manager"], files["researcher"]
        click.echo(
            f"\nTry:\n  mdm --settings {mgr} status\n  mdm --settings {mgr} ls /dicom\n"
            f"  mdm --settings {res} find -q ModalitiesInStudy=MR\n"
            f"  mdm --settings {res} get /dicom/<study> -d images\n"
            "Press Ctrl-C to stop."
        )
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        say("stopping")
