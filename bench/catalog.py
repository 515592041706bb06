"""Catalog benchmark: QIDO-RS study searches against raw SQL, and the registration rate.

    .venv/bin/python bench/catalog.py --instances 1000000            # a throw-away PostgreSQL
    .venv/bin/python bench/catalog.py --url postgresql+psycopg://... --instances 100000

What it does, in one run on one database:

1. loads N instances in N/100 studies (4 series each, 2 studies per patient, dates over
   2000-2024, modalities drawn from 8) with PostgreSQL ``COPY`` (bulk, not the registration
   path), after ``mdm.catalog.migrations.upgrade`` made the real schema and indexes;
2. for each query kind (PatientID, a one-month StudyDate range, ModalitiesInStudy), times
   * ``qido``: ``qido.parse`` + ``metadata.search`` in a read session, what the service runs;
   * ``http``: the same through ``create_app`` in-process (Starlette, JSON), no network;
   * ``raw``: the equivalent SQL text with psycopg directly (same joins, same ACL scope,
     same LIMIT), rows fetched;
   and prints p50/p99 in ms and the ratios qido/raw and http/raw;
3. registers a sample of instances through ``registration.register`` (file catalog, metadata,
   vault, NEARLINE replica; one transaction per instance, as ``POST /files`` does) and through
   ``registration.register_many`` (one transaction per series of 10, ``POST /files/batch``),
   and prints the rates in instances/s.

The caller is an ordinary user whose VOMS group holds ``list`` on ``/dicom`` (the usual
VO-wide grant), so every query carries the ACL scope.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "PT", "SR"]
SERIES_PER_STUDY = 4
USER_DN = "/DC=org/DC=mdmbench/CN=Bench User"
USER_FQAN = "/mdm/radiology"


def _copy(conn: Any, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]]) -> int:
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def load(url: str, instances: int, seed: int = 7) -> dict[str, Any]:
    """Bulk-load the synthetic catalog; return what the queries need to pick values from."""
    import psycopg

    rnd = random.Random(seed)
    studies = max(1, instances // 100)
    patients = max(1, studies // 2)
    per_study = instances // studies
    now = "2026-01-01 00:00:00+00"
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    study_dates = [
        f"{rnd.randint(2000, 2024)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
        for _ in range(studies)
    ]
    study_mods = [rnd.sample(MODALITIES, SERIES_PER_STUDY) for _ in range(studies)]
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        _copy(
            conn,
            "md_patient",
            ["id", "patient_id", "patient_name", "patient_sex", "attrs"],
            (
                (p + 1, f"PSN-{p:07d}", f"Pseudo^{p:07d}", "FM"[p % 2], "{}")
                for p in range(patients)
            ),
        )
        entry_cols = [
            "id",
            "guid",
            "path",
            "parent_id",
            "name",
            "kind",
            "owner",
            "created",
            "modified",
        ]
        series_attrs = json.dumps({"00180050": {"vr": "DS", "Value": ["1.5"]}})

        def entries() -> Iterator[tuple[Any, ...]]:
            yield (1, str(uuid.uuid4()), "/dicom", None, "dicom", "directory", "bench", now, now)
            eid = 1
            for s in range(studies):
                sp = f"/dicom/2.25.{s + 1}"
                eid += 1
                study_eid = eid
                yield (
                    eid,
                    str(uuid.uuid4()),
                    sp,
                    1,
                    f"2.25.{s + 1}",
                    "directory",
                    "bench",
                    now,
                    now,
                )
                for k in range(SERIES_PER_STUDY):
                    se = f"2.25.{s + 1}.{k + 1}"
                    eid += 1
                    series_eid = eid
                    yield (
                        eid,
                        str(uuid.uuid4()),
                        f"{sp}/{se}",
                        study_eid,
                        se,
                        "directory",
                        "bench",
                        now,
                        now,
                    )
                    for i in range(_count(per_study, k)):
                        sop = f"{se}.{i + 1}"
                        eid += 1
                        yield (
                            eid,
                            str(uuid.uuid4()),
                            f"{sp}/{se}/{sop}",
                            series_eid,
                            sop,
                            "file",
                            "bench",
                            now,
                            now,
                        )

        n_entries = _copy(conn, "fc_entry", entry_cols, entries())
        _copy(
            conn,
            "md_study",
            [
                "id",
                "patient_fk",
                "study_uid",
                "study_date",
                "study_time",
                "accession_number",
                "study_description",
                "modalities_in_study",
                "number_of_series",
                "number_of_instances",
                "attrs",
                "created",
            ],
            (
                (
                    s + 1,
                    s % patients + 1,
                    f"2.25.{s + 1}",
                    study_dates[s],
                    "101500",
                    f"ACC{s:07d}",
                    f"Study {s % 50}",
                    "\\".join(sorted(study_mods[s])),
                    SERIES_PER_STUDY,
                    per_study,
                    "{}",
                    now,
                )
                for s in range(studies)
            ),
        )
        _copy(
            conn,
            "md_series",
            [
                "id",
                "study_fk",
                "series_uid",
                "modality",
                "series_number",
                "series_description",
                "body_part_examined",
                "number_of_instances",
                "attrs",
            ],
            (
                (
                    s * SERIES_PER_STUDY + k + 1,
                    s + 1,
                    f"2.25.{s + 1}.{k + 1}",
                    study_mods[s][k],
                    k + 1,
                    f"series {k + 1}",
                    "CHEST",
                    _count(per_study, k),
                    series_attrs,
                )
                for s in range(studies)
                for k in range(SERIES_PER_STUDY)
            ),
        )

        def instance_rows() -> Iterator[tuple[Any, ...]]:
            iid, eid = 0, 1
            for s in range(studies):
                eid += 1
                for k in range(SERIES_PER_STUDY):
                    eid += 1
                    for i in range(_count(per_study, k)):
                        iid += 1
                        eid += 1
                        yield (
                            iid,
                            s * SERIES_PER_STUDY + k + 1,
                            eid,
                            f"2.25.{s + 1}.{k + 1}.{i + 1}",
                            "1.2.840.10008.5.1.4.1.1.2",
                            i + 1,
                            512,
                            512,
                            "{}",
                        )

        n_instances = _copy(
            conn,
            "md_instance",
            [
                "id",
                "series_fk",
                "entry_fk",
                "sop_instance_uid",
                "sop_class_uid",
                "instance_number",
                "rows",
                "columns",
                "attrs",
            ],
            instance_rows(),
        )
        conn.execute(
            'INSERT INTO fc_acl (path, principal, "right", created) '
            "VALUES (%s, %s, 'list', now())",
            ("/dicom", f"fqan:{USER_FQAN}"),
        )
        for table in ("md_patient", "fc_entry", "md_study", "md_series", "md_instance"):
            conn.execute(SETVAL.format(table=table))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return {
        "studies": studies,
        "patients": patients,
        "instances": n_instances,
        "entries": n_entries,
        "load_seconds": time.perf_counter() - t0,
    }


def _count(per_study: int, k: int) -> int:
    base, extra = divmod(per_study, SERIES_PER_STUDY)
    return base + (1 if k < extra else 0)


SETVAL = "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
RAW = {
    # The statement metadata.search compiles, written by hand: same joins, scope, order, limit.
    "PatientID": "p.patient_id = %(v)s",
    "StudyDate": "s.study_date IS NOT NULL AND s.study_date >= %(lo)s AND s.study_date <= %(hi)s",
    "ModalitiesInStudy": (
        "EXISTS (SELECT 1 FROM md_series se WHERE se.study_fk = s.id AND se.modality = %(v)s)"
    ),
}
RAW_SQL = """
SELECT s.study_date, s.study_time, s.accession_number, s.modalities_in_study,
       s.referring_physician_name, p.patient_name, p.patient_id, p.patient_birth_date,
       p.patient_sex, s.study_uid, s.study_id, s.study_description, s.number_of_series,
       s.number_of_instances
FROM md_study s JOIN md_patient p ON s.patient_fk = p.id
WHERE EXISTS (SELECT 1 FROM fc_acl a WHERE a."right" = 'list' AND a.principal = ANY(%(principals)s)
              AND (a.path = '/dicom' OR a.path = '/dicom/' || s.study_uid))
  AND {cond}
ORDER BY s.id LIMIT %(limit)s OFFSET 0
"""


def registration_body(n: int) -> dict[str, Any]:
    """A registration as the recall worker or a PACS walk sends it: 10 per series, 4 series."""
    study, series, sop = f"2.26.{n // 40}", f"2.26.{n // 40}.{n // 10}", f"2.26.9.{n}"
    ds = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "00080020": {"vr": "DA", "Value": ["20240101"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Pseudo^Reg"}]},
        "00100020": {"vr": "LO", "Value": [f"PSN-R{n // 80}"]},
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [series]},
        "00200013": {"vr": "IS", "Value": [n % 10 + 1]},
        "00180050": {"vr": "DS", "Value": ["1.0"]},
    }
    return {
        "dataset": ds,
        "original": {
            "PatientID": f"H{n // 80}",
            "StudyInstanceUID": f"1.9.{study}",
            "SeriesInstanceUID": f"1.9.{series}",
            "SOPInstanceUID": f"1.9.{sop}",
        },
        "replica": {"se": "MDM-SE", "url": f"https://se/{sop}", "state": "NEARLINE"},
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed(fn: Callable[[Any], Any], inputs: list[Any]) -> list[float]:
    out = []
    for item in inputs:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.helpers.postgres import postgres_server

    with postgres_server() as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="PostgreSQL URL (empty database); default: a throw-away one")
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="timed queries per kind and path")
    parser.add_argument("--limit", type=int, default=100, help="QIDO limit of every query")
    parser.add_argument("--register", type=int, default=1000, help="instances registered")
    args = parser.parse_args()

    import httpx

    from mdm.acl import SCOPE_KEY, Identity
    from mdm.catalog import access, metadata, qido
    from mdm.catalog.access import Caller
    from mdm.catalog.db import CatalogDatabases
    from mdm.catalog.migrations import upgrade
    from mdm.catalog.registration import Registration, register, register_many
    from mdm.servers.catalog_app import create_app
    from mdm.settings import CatalogSettings, Settings

    with database(args.url) as url:
        dbs = CatalogDatabases(url, pool_size=4)
        upgrade(dbs)
        info = load(url, args.instances)
        print(
            f"loaded {info['instances']:,} instances, {info['studies']:,} studies, "
            f"{info['patients']:,} patients in {info['load_seconds']:.0f} s (COPY)"
        )
        who = Identity(USER_DN, (USER_FQAN,))
        caller = Caller.of(who)
        rnd = random.Random(11)

        def values(kind: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
            if kind == "PatientID":
                v = f"PSN-{rnd.randrange(info['patients']):07d}"
                return [("PatientID", v)], {"v": v}
            if kind == "StudyDate":
                y, m = rnd.randint(2000, 2024), rnd.randint(1, 12)
                lo, hi = f"{y}{m:02d}01", f"{y}{m:02d}31"
                return [("StudyDate", f"{lo}-{hi}")], {"lo": lo, "hi": hi}
            v = rnd.choice(MODALITIES)
            return [("ModalitiesInStudy", v)], {"v": v}

        import psycopg

        raw_conn = psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        )
        app = create_app(Settings(catalog=CatalogSettings(database_url=url)), databases=dbs)

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope["extensions"] = {SCOPE_KEY: who}
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=asgi)
        http = httpx.AsyncClient(transport=transport, base_url="http://catalog")
        loop = asyncio.new_event_loop()
        print(f"\nQIDO /studies, limit {args.limit}, {args.queries} queries per row (ms)")
        print(f"{'query':<18}{'path':<6}{'p50':>8}{'p99':>8}{'rows':>7}{'ratio p50':>11}")
        principals = access.principals_of(who)
        for kind in ("PatientID", "StudyDate", "ModalitiesInStudy"):
            cases = [values(kind) for _ in range(args.queries)]
            rows: list[int] = []

            sql = RAW_SQL.format(cond=RAW[kind])

            def run_raw(params: dict[str, Any], sql: str = sql, rows: list[int] = rows) -> None:
                bound = {**params, "principals": principals, "limit": args.limit}
                rows.append(len(raw_conn.execute(sql, bound).fetchall()))  # type: ignore[call-overload]

            def run_qido(q: list[tuple[str, str]]) -> None:
                query = qido.parse("study", [*q, ("limit", str(args.limit))])
                with dbs.catalog.session() as s:
                    metadata.search(s, caller, query)

            def run_http(q: list[tuple[str, str]]) -> None:
                r = loop.run_until_complete(
                    http.get("/studies", params=[*q, ("limit", str(args.limit))])
                )
                r.raise_for_status()

            for c in cases[:10]:  # warm caches and pools
                run_raw(c[1])
                run_qido(c[0])
                run_http(c[0])
            raw = timed(run_raw, [c[1] for c in cases])
            qd = timed(run_qido, [c[0] for c in cases])
            ht = timed(run_http, [c[0] for c in cases])
            r50, r99 = percentiles(raw)
            avg_rows = sum(rows[10:]) / max(1, len(rows[10:]))
            print(f"{kind:<18}{'raw':<6}{r50:>8.2f}{r99:>8.2f}{avg_rows:>7.0f}{'1.00':>11}")
            for name, samples in (("qido", qd), ("http", ht)):
                p50, p99 = percentiles(samples)
                print(f"{'':<18}{name:<6}{p50:>8.2f}{p99:>8.2f}{'':>7}{p50 / r50:>11.2f}")
        loop.run_until_complete(http.aclose())
        loop.close()
        raw_conn.close()

        admin = Caller.of(Identity("/CN=bench admin"), admin_entries=["dn:/CN=bench admin"])
        print()
        for mode, base in (("single", 0), ("batch", 10_000_000)):
            bodies = [registration_body(base + n) for n in range(args.register)]
            t = time.perf_counter()
            if mode == "single":  # POST /files: one transaction per instance
                for body in bodies:
                    with dbs.catalog.session(write=True) as s:
                        register(s, s, admin, Registration.from_json(body))
            else:  # POST /files/batch: one transaction per series of 10
                for i in range(0, len(bodies), 10):
                    regs = [Registration.from_json(b) for b in bodies[i : i + 10]]
                    with dbs.catalog.session(write=True) as s:
                        register_many(s, s, admin, regs)
            dt = time.perf_counter() - t
            print(
                f"registration ({mode}): {args.register} instances in {dt:.1f} s = "
                f"{args.register / dt:.0f} instances/s"
            )
        dbs.dispose()


if __name__ == "__main__":
    main()
