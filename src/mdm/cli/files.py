"""``mdm ls | stat | find | acl | identity``: the catalog service from the command line.

Thin commands over ``mdm.client.CatalogClient`` (``catalog.url`` and the ``[tls]`` credential;
like grid tools, ``X509_USER_PROXY`` / ``/tmp/x509up_u<uid>`` and ``X509_CERT_DIR`` are used
when the settings name none). ``--json`` prints what the service answered.

``mdm find`` takes QIDO-RS parameters (PS3.18 §8.3.4) either as ``-q Key=Value`` (any key,
tags too: ``-q 00100020=PSN-1``) or as options named after the attribute (``--PatientID``,
``--StudyDate 20200101-20201231``, ``--ModalitiesInStudy MR``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mdm.catalog.qido import ATTRIBUTES

if TYPE_CHECKING:
    from mdm.client import CatalogClient

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@contextmanager
def _client(ctx: click.Context) -> Iterator[CatalogClient]:
    from mdm.cli import load_settings
    from mdm.client import CatalogClient

    settings = load_settings(ctx)
    tls = settings.tls
    if tls.proxy is None and tls.cert is None:
        default = Path(f"/tmp/x509up_u{os.getuid()}")  # noqa: S108 - the grid's own default
        proxy = _env_path("X509_USER_PROXY") or (default if default.exists() else None)
        tls = dataclasses.replace(tls, proxy=proxy)
    if tls.ca_dir is None:
        tls = dataclasses.replace(tls, ca_dir=_env_path("X509_CERT_DIR"))
    with CatalogClient.from_settings(dataclasses.replace(settings, tls=tls)) as client:
        yield client


def _emit(as_json: bool, data: Any, lines: Sequence[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), *(fmt.format(*map(str, r)) for r in rows)]


@click.command()
@click.argument("path", default="/dicom")
@click.option("-l", "long", is_flag=True, help="Long listing: size, owner, GUID.")
@_JSON
@click.pass_context
def ls(ctx: click.Context, path: str, long: bool, as_json: bool) -> None:
    """List a catalog directory (/dicom, /dicom/STUDY, /dicom/STUDY/SERIES)."""
    with _client(ctx) as client:
        entries = client.ls(path)
    if long:
        rows = [[e["kind"][0], e["size"] or "-", e["owner"], e["guid"], e["name"]] for e in entries]
        lines = _table(rows, ["t", "size", "owner", "guid", "name"]) if rows else []
    else:
        lines = [e["name"] + ("/" if e["kind"] == "directory" else "") for e in entries]
    _emit(as_json, entries, lines)


@click.command()
@click.argument("path_or_guid")
@_JSON
@click.pass_context
def stat(ctx: click.Context, path_or_guid: str, as_json: bool) -> None:
    """Show a catalog entry: GUID, size, checksums, key id, replicas and your rights."""
    with _client(ctx) as client:
        entry = client.stat(path_or_guid)
    keys = ("path", "guid", "kind", "owner", "size", "adler32", "sha256", "key_id", "created")
    lines = [f"{k:>9}: {entry.get(k) if entry.get(k) is not None else '-'}" for k in keys]
    lines.append(f"{'rights':>9}: {','.join(entry.get('rights', [])) or '-'}")
    for r in entry.get("replicas", []):
        extra = r.get("pinned_until") or r.get("reason") or ""
        lines.append(f"{'replica':>9}: {r['se']} {r['state']} {r.get('url', '')} {extra}".rstrip())
    _emit(as_json, entry, lines)


_COLUMNS = {
    "studies": ("0020000D", "00100020", "00080020", "00080061", "00081030", "00201208"),
    "series": ("0020000E", "0020000D", "00080060", "00200011", "0008103E", "00201209"),
    "instances": ("00080018", "0020000E", "00080016", "00200013"),
}
_BY_TAG = {a.tag: a.keyword for a in ATTRIBUTES}


def _attribute_options(f: Any) -> Any:
    for attr in reversed([a for a in ATTRIBUTES if a.searchable]):
        f = click.option(
            f"--{attr.keyword}", attr.keyword, default=None, help=f"QIDO {attr.vr} match."
        )(f)
    return f


def _cell(match: dict[str, Any], tag: str) -> str:
    values = match.get(tag, {}).get("Value") or []
    out = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values]
    return "\\".join(out) or "-"


@click.command(context_settings={"max_content_width": 100})
@click.argument("level", type=click.Choice(["studies", "series", "instances"]), default="studies")
@click.option("-q", "--query", "pairs", multiple=True, metavar="KEY=VALUE", help="QIDO parameter.")
@click.option("--study", default=None, help="Search inside this study (StudyInstanceUID).")
@click.option("--series", default=None, help="Search inside this series (with --study).")
@click.option("--limit", type=int, default=None, help="At most this many answers.")
@click.option("--offset", type=int, default=None, help="Skip this many answers.")
@click.option("--include", multiple=True, help="includefield: keyword, tag or 'all'.")
@_JSON
@_attribute_options
@click.pass_context
def find(
    ctx: click.Context,
    level: str,
    pairs: tuple[str, ...],
    study: str | None,
    series: str | None,
    limit: int | None,
    offset: int | None,
    include: tuple[str, ...],
    as_json: bool,
    **attributes: str | None,
) -> None:
    """Search the de-identified metadata catalog with QIDO-RS parameters."""
    params: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-q")
        params.append((key, value))
    params += [(k, v) for k, v in attributes.items() if v is not None]
    params += [("includefield", i) for i in include]
    params += [(k, str(v)) for k, v in (("limit", limit), ("offset", offset)) if v is not None]
    with _client(ctx) as client:
        if level == "studies":
            matches = client.search_studies(params)
        elif level == "series":
            matches = client.search_series(study, params)
        else:
            matches = client.search_instances(study, series, params)
    tags = _COLUMNS[level]
    rows = [[_cell(m, t) for t in tags] for m in matches]
    lines = _table(rows, [_BY_TAG.get(t, t) for t in tags]) if rows else []
    _emit(as_json, matches, lines)


@click.command()
@click.argument("path", default="/dicom")
@click.option("--set", "set_", multiple=True, metavar="ENTRY=RIGHTS", help="Replace all grants.")
@click.option("--grant", multiple=True, metavar="ENTRY=RIGHTS", help="Add rights to an entry.")
@click.option("--revoke", multiple=True, metavar="ENTRY[=RIGHTS]", help="Remove rights (or all).")
@_JSON
@click.pass_context
def acl(
    ctx: click.Context,
    path: str,
    set_: tuple[str, ...],
    grant: tuple[str, ...],
    revoke: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show or change the grants on a directory.

    ENTRY is dn:<DN> or fqan:/vo/group[/Role=r]; RIGHTS a comma list of list, read, write,
    admin, identity. Rights are inherited by everything below the directory.
    """
    with _client(ctx) as client:
        if set_ and (grant or revoke):
            raise click.UsageError("--set replaces everything: do not mix it with --grant/--revoke")
        if set_ or grant or revoke:
            entries: dict[str, set[str]] = {}
            if not set_:
                current = client.get_acl(path)["entries"]
                entries = {k: set(v) for k, v in current.items()}
            for item in (*set_, *grant):
                key, rights = _split(item)
                entries.setdefault(key, set()).update(rights)
            for item in revoke:
                key, rights = _split(item, optional=True)
                if rights:
                    entries.get(key, set()).difference_update(rights)
                else:
                    entries.pop(key, None)
            client.set_acl(path, {k: sorted(v) for k, v in entries.items() if v})
        result = client.get_acl(path)
    lines = [f"# {result['path']} (your rights: {','.join(result['rights']) or '-'})"]
    lines += [f"{k} = {','.join(v)}" for k, v in result["entries"].items()]
    _emit(as_json, result, lines)


def _split(item: str, optional: bool = False) -> tuple[str, set[str]]:
    key, sep, rights = item.rpartition("=") if "=" in item.split(":", 1)[-1] else (item, "", "")
    if not sep and not optional:
        raise click.BadParameter(f"{item!r} is not ENTRY=RIGHTS")
    return key, {r.strip() for r in rights.split(",") if r.strip()}


@click.command()
@click.argument("study", required=False)
@click.option("--patient-id", default=None, help="Original PatientID: find its studies.")
@click.option("--accession", default=None, help="Original AccessionNumber: find its studies.")
@click.option("--reason", required=True, help="Why you need it (written to the audit log).")
@_JSON
@click.pass_context
def identity(
    ctx: click.Context,
    study: str | None,
    patient_id: str | None,
    accession: str | None,
    reason: str,
    as_json: bool,
) -> None:
    """Level 3: the original identity behind a pseudonymous STUDY, or the studies of a patient.

    Needs the identity right; every lookup, granted or refused, is audited.
    """
    if bool(study) == bool(patient_id or accession):
        raise click.UsageError("give a pseudonymous STUDY, or --patient-id / --accession")
    with _client(ctx) as client:
        if study:
            found = client.study_identity(study, reason=reason)
            lines = [f"{k}: {v if v is not None else '-'}" for k, v in found["original"].items()]
            lines.insert(
                0, f"pseudonymous study {found['StudyInstanceUID']} ({found['PatientID']})"
            )
            _emit(as_json, found, lines)
        else:
            studies = client.find_studies(
                patient_id=patient_id, accession_number=accession, reason=reason
            )
            _emit(as_json, studies, [f"{s['StudyInstanceUID']}  {s['PatientID']}" for s in studies])
