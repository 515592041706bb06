"""``mdm register --pacs NAME [--study UID | --patient ID | --since DATE]``.

Walks the PACS with C-FIND and registers every instance as a NEARLINE file (pseudonymous LFN,
de-identified attributes, originals in the identity vault): ``mdm.workers.registrar``. Runs
where the catalog database is reachable (``catalog.database_url``), with the site secret
(``anonymize.secret_file``) the recall workers use. Idempotent: run it again at will.
"""

from __future__ import annotations

import click

from mdm.cli import load_settings


@click.command("register")
@click.option("--pacs", "pacs_name", required=True, help="A PACS of [dicom.pacs.NAME].")
@click.option("--study", "study_uid", default=None, help="Only this StudyInstanceUID.")
@click.option("--patient", "patient_id", default=None, help="Only this patient's studies.")
@click.option("--since", default=None, help="Only studies from this date on (YYYY-MM-DD).")
@click.option("--quiet", is_flag=True, help="No progress display, only the summary.")
@click.pass_context
def register(
    ctx: click.Context,
    pacs_name: str,
    study_uid: str | None,
    patient_id: str | None,
    since: str | None,
    quiet: bool,
) -> None:
    """Register a PACS's instances in the catalog as NEARLINE files (idempotent)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mdm._log import quiet_pynetdicom
    from mdm.catalog import migrations
    from mdm.dicom.pacs import Pacs
    from mdm.workers.instance import anonymizer_from, service_caller
    from mdm.workers.registrar import Registrar

    quiet_pynetdicom()
    settings = load_settings(ctx)
    pacs = Pacs.from_settings(settings, pacs_name)
    dbs = migrations.open_current(settings.catalog)
    try:
        registrar = Registrar(
            settings, dbs, service_caller(settings), anonymizer_from(settings), pacs
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed} instances"),
            TimeElapsedColumn(),
            disable=quiet,
            transient=True,
        ) as bar:
            task = bar.add_task(f"registering from PACS {pacs_name}", total=None)
            summary = registrar.run(
                study_uid=study_uid,
                patient_id=patient_id,
                since=since,
                progress=lambda n: bar.advance(task, n),
            )
    finally:
        dbs.dispose()
    w = summary.walk
    click.echo(
        f"PACS {pacs_name}: {w.studies} studies, {w.series} series, {w.instances} instances; "
        f"{summary.created} registered, {summary.existing} already known"
    )
    if w.mismatched:
        click.echo(
            f"warning: {len(w.mismatched)} series listed fewer or more instances than announced",
            err=True,
        )
