"""``mdm demo``: the whole system on loopback, three users, every claim checked.

One command, nothing to set up: a local grid in a temporary directory (``mdm.demo.grid``), a
synthetic hospital in its PACS, and the story of ``mdm.demo.story`` with one line per step,
then a summary table. The exit status is 0 only if every step did what the design says; a
step whose part of MDM is missing is reported as NOT RUN and fails the demo.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console

    from mdm.demo.story import Story


@click.command()
@click.option(
    "--pacs",
    type=click.Choice(["auto", "orthanc", "qrscp"]),
    default="auto",
    show_default=True,
    help="PACS to start: Orthanc when installed (auto), or pynetdicom's qrscp.",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run in this directory and keep it (settings, logs, databases) afterwards.",
)
@click.pass_context
def demo(ctx: click.Context, pacs: str, keep: Path | None) -> None:
    """Run the whole system on loopback and show what each user can do."""
    from rich.console import Console

    from mdm.demo.grid import Grid
    from mdm.demo.hospital import Hospital
    from mdm.demo.story import story

    console = Console(highlight=False)
    if not console.is_terminal:  # a log or a pipe: no wrapping of the table at 80 columns
        console = Console(highlight=False, width=120)
    t0 = time.monotonic()

    def say(msg: str) -> None:
        console.print(f"{time.monotonic() - t0:6.1f}s  {msg}", markup=False, soft_wrap=True)

    ok = False
    with tempfile.TemporaryDirectory(prefix="mdm-demo-") as tmp:
        root = keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not (ctx.find_root().obj or {}).get("debug"):
            _log_to(root / "demo.log")
        say(f"starting the local grid in {root} (log: demo.log)")
        with Grid(root, pacs_kind=pacs, say=say) as grid, story(grid, Hospital(), say) as s:
            ok = s.run()
            _summary(console, s, time.monotonic() - t0)
        say("grid stopped, directory " + ("kept" if keep else "removed"))
    console.print("demo " + ("PASSED" if ok else "FAILED: see the steps marked above"))
    sys.exit(0 if ok else 1)


def _log_to(path: Path) -> None:
    """Server and audit logs go to a file: the screen shows one line per step."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mdm", False):
            root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _summary(console: Console, s: Story, total: float) -> None:
    from rich.table import Table

    table = Table(title=f"What each user could and could not do ({total:.0f} s in all)")
    for col in ("user", "action", "expected", "outcome", "time", "throughput"):
        table.add_column(col, justify="right" if col in ("time", "throughput") else "left")
    for st in s.steps:
        style = {True: "green", False: "bold red", None: "yellow"}[st.ok]
        table.add_row(
            st.user,
            st.action,
            st.expect,
            f"[{style}]{st.outcome}[/]",
            f"{st.seconds:.1f}s",
            st.rate,
        )
    console.print(table)
    for user in dict.fromkeys(st.user for st in s.steps):
        mine = [st for st in s.steps if st.user == user]
        could = [st.action for st in mine if st.ok and st.expect == "allowed"]
        could_not = [st.action for st in mine if st.ok and st.expect == "refused"]
        line = f"{user}: could {'; '.join(could) or 'nothing'}"
        if could_not:
            line += f" | could NOT (as designed): {'; '.join(could_not)}"
        console.print(line, markup=False, soft_wrap=True)
