"""The database side of ``mdm register``: instances registered per second, one process.

Usage::

    .venv/bin/python bench/register.py [--instances 1080] [--rounds 3] [--url URL]

``mdm register`` walks the PACS with C-FIND, then registers each study in one transaction
(``mdm.workers.registrar.Registrar.register``): anonymize the C-FIND attributes, then the file
entry and its two replicas, the metadata catalog rows and the identity vault. This bench
leaves the PACS out (the walk's speed is the PACS's): it builds the walked instances of the
``CorpusSpec.ct_bench`` corpus from the generated datasets, as C-FIND would return them, and
times, in the same process and alternating each round:

* reference: the anonymization of the same headers alone (``Anonymizer.anonymize`` of
  ``original_dataset``), the work no registration path can skip;
* register: ``Registrar.register`` per study into a fresh catalog (SQLite in a temporary
  directory, or the empty PostgreSQL database ``--url`` names), then again (every instance
  already known: the idempotent re-run).

Prints instances/s and CPU ms per instance of each, and register/reference ratios of CPU time,
which compare across machines and loads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdm.catalog import access  # noqa: E402
from mdm.catalog.db import CatalogDatabases  # noqa: E402
from mdm.catalog.migrations import upgrade  # noqa: E402
from mdm.dicom.anonymize import Anonymizer  # noqa: E402
from mdm.dicom.corpus import CorpusSpec, generate  # noqa: E402
from mdm.dicom.query import InstanceRecord, SeriesRecord, StudyRecord  # noqa: E402
from mdm.dicom.walk import WalkedInstance  # noqa: E402
from mdm.settings import Settings  # noqa: E402
from mdm.workers.instance import service_caller  # noqa: E402
from mdm.workers.registrar import Registrar, original_dataset  # noqa: E402

SECRET = b"bench-register-site-secret-32byt"


class _Pacs:
    """What ``Registrar.register`` needs of a PACS: its name (for the ``pacs:`` replica)."""

    name = "orthanc"


def walked(instances: int) -> list[list[WalkedInstance]]:
    """The corpus as the C-FIND walk yields it, one list per study."""
    studies: dict[str, list[WalkedInstance]] = {}
    for _row, ds in generate(CorpusSpec.ct_bench(instances)):
        w = WalkedInstance(
            StudyRecord.from_identifier(ds),
            SeriesRecord.from_identifier(ds),
            InstanceRecord.from_identifier(ds),
        )
        studies.setdefault(w.study_uid, []).append(w)
    return list(studies.values())


def register_all(reg: Registrar, studies: list[list[WalkedInstance]]) -> None:
    for study in studies:
        reg.register(study)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=1080)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--url", default="", help="an EMPTY catalog database (default: SQLite)")
    args = ap.parse_args()
    if args.url and args.rounds != 1:
        ap.error("--url registers into one database: use --rounds 1")
    studies = walked(args.instances)
    n = sum(len(s) for s in studies)
    anonymizer = Anonymizer(secret=SECRET)
    settings = Settings.from_mapping({"storage": {"name": "se1", "url": "https://se:8443"}})
    rows: dict[str, list[tuple[float, float]]] = {"reference": [], "register": [], "again": []}
    with tempfile.TemporaryDirectory(prefix="mdm-bench-register-") as tmp:
        for i in range(args.rounds):
            rows["reference"].append(
                timed(
                    lambda: [anonymizer.anonymize(original_dataset(w)) for s in studies for w in s]
                )
            )
            dbs = CatalogDatabases(args.url or f"sqlite:///{tmp}/catalog-{i}.db")
            try:
                upgrade(dbs)
                with dbs.catalog.session(write=True) as s:
                    access.set_acl(s, "/dicom", {"fqan:/mdm": ["list"]})
                reg = Registrar(
                    settings,
                    dbs,
                    service_caller(settings),
                    anonymizer,
                    _Pacs(),  # type: ignore[arg-type]
                )
                rows["register"].append(timed(partial(register_all, reg, studies)))
                rows["again"].append(timed(partial(register_all, reg, studies)))
            finally:
                dbs.dispose()
    print(f"{n} CT instances in {len(studies)} studies, {args.rounds} round(s), medians")
    print(f"{'path':34s} {'inst/s':>8s} {'CPU ms/inst':>12s} {'CPU x ref':>10s}")
    ref_cpu = statistics.median(c for _w, c in rows["reference"])
    labels = {
        "reference": "reference: anonymize the headers",
        "register": "register (new instances)",
        "again": "register again (all known)",
    }
    for name, label in labels.items():
        wall = statistics.median(w for w, _c in rows[name])
        cpu = statistics.median(c for _w, c in rows[name])
        print(f"{label:34s} {n / wall:8.1f} {cpu / n * 1e3:12.2f} {cpu / ref_cpu:10.1f}")


if __name__ == "__main__":
    main()
