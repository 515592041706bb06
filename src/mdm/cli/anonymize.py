"""``mdm anonymize IN... --out DIR``: de-identify DICOM files and trees (PS3.15 Annex E).

A thin shell over ``mdm.dicom.anonymize``: it resolves the secret and options (command line over
the ``[anonymize]`` settings), streams the files through ``anonymize_paths`` with a progress bar,
prints the summary and writes the JSON report. Exit status: 0 when every file was anonymized,
1 when any was refused or failed (they are listed in the report and quarantined).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mdm.cli import load_settings
from mdm.dicom.anonymize.profile import OPTION_CODES

_OPTION_NAMES = [n.replace("_", "-") for n in OPTION_CODES]
_MIN_SECRET = 16


def read_secret(path: Path) -> bytes:
    """The site secret from *path* (trailing newline ignored); ConfigError if unusable."""
    from mdm.errors import ConfigError

    try:
        data = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from exc
    if len(data) < _MIN_SECRET:
        raise ConfigError(
            f"the secret file {path} holds {len(data)} bytes; at least {_MIN_SECRET} are needed",
            key="anonymize.secret_file",
        )
    return data


@click.command("anonymize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory: OUT/<study>/<series>/<instance>.dcm, pseudonymous UIDs.",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site secret keying pseudonyms, UIDs and date shifts [settings: anonymize.secret_file].",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    type=click.Choice(_OPTION_NAMES),
    help="A PS3.15 E.3 option (repeatable) [settings: anonymize.options].",
)
@click.option(
    "--allow-sop-class",
    multiple=True,
    help="SOP Class UID accepted although it often carries burned-in text (repeatable).",
)
@click.option(
    "--quarantine",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where refused and failed originals are copied [default: OUT.quarantine].",
)
@click.option("--no-quarantine", is_flag=True, help="Do not copy refused or failed files.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a JSON report (counts and one entry per file) here.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def anonymize(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    out_dir: Path,
    secret_file: Path | None,
    options: tuple[str, ...],
    allow_sop_class: tuple[str, ...],
    quarantine: Path | None,
    no_quarantine: bool,
    report: Path | None,
    quiet: bool,
) -> None:
    """De-identify DICOM files and directories (PS3.15 Annex E, keyed and deterministic)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mdm._log import audit_logger
    from mdm.dicom.anonymize import Anonymizer, Options
    from mdm.dicom.anonymize.batch import (
        DONE,
        FAILED,
        REFUSED,
        Summary,
        anonymize_paths,
        iter_files,
    )
    from mdm.errors import ConfigError, UsageError

    settings = load_settings(ctx).anonymize
    secret_path = secret_file or settings.secret_file
    if secret_path is None:
        raise ConfigError(
            "no site secret: pass --secret-file or set anonymize.secret_file",
            key="anonymize.secret_file",
        )
    secret = read_secret(Path(secret_path))
    opts = Options.from_names(
        list(options or settings.options),
        allow_sop_classes=tuple(allow_sop_class) + tuple(settings.allow_burned_in_sop_classes),
    )
    q: Path | None = None
    if not no_quarantine:
        q = quarantine or out_dir.with_name(out_dir.name + ".quarantine")
        if q.resolve().is_relative_to(out_dir.resolve()):
            raise UsageError("the quarantine holds identified files: keep it outside --out")
    anonymizer = Anonymizer(options=opts, secret=secret)
    files = list(iter_files(inputs))
    summary = Summary()
    err = Console(stderr=True)
    with Progress(
        TextColumn("anonymizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        console=err,
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task("anonymize", total=len(files), state="")
        for outcome in anonymize_paths(anonymizer, files, out_dir, q):
            summary.add(outcome)
            progress.update(
                task,
                advance=1,
                state=f"refused {summary.count(REFUSED)} failed {summary.count(FAILED)}",
            )
    done, refused, failed = summary.count(DONE), summary.count(REFUSED), summary.count(FAILED)
    audit_logger().info(
        "anonymization applied: %s; done=%d refused=%d failed=%d",
        anonymizer.describe(),
        done,
        refused,
        failed,
    )
    for outcome in summary.outcomes:
        if outcome.status != DONE:
            where = "" if outcome.error.startswith(outcome.source) else f"{outcome.source}: "
            click.echo(f"{outcome.status}: {where}{outcome.error}", err=True)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary.as_json(anonymizer.describe()), indent=2) + "\n")
    click.echo(f"done {done}, refused {refused}, failed {failed}")
    if refused or failed:
        raise NotAllExported(f"{refused + failed} file(s) not exported (listed above)")


class NotAllExported(click.ClickException):
    """Exit status 1 when any file was refused or failed; the summary is already printed."""

    exit_code = 1
