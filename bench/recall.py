"""Recall throughput end to end (PACS -> anonymize -> key servers -> encrypt -> cache -> ONLINE)
against dcmtk ``getscu`` and plain pynetdicom C-GET of the same studies from the same Orthanc.

    .venv/bin/python bench/recall.py                       # 1,080 CT instances of ~0.5 MB
    .venv/bin/python bench/recall.py --instances 270 --workers 2 --rounds 1

Everything real and on this machine: Orthanc (Debian), five key servers (``mdm serve
keyserver`` over mutual TLS, SQLite), a SQLite catalog, and ``--workers`` recall worker
processes (``mdm worker recall --once``, each claiming whole series). The recall is timed from
the moment the staging requests are queued until every file is ONLINE (checksummed, key
registered with 3-of-5 shares on 4 servers, metadata stored). getscu and plain pynetdicom
only write the received files to disk. Orthanc, the key servers and the clients share the
cores, which favours the low-CPU dcmtk client.

The references run on a warm Orthanc (one untimed getscu pass first: the first retrieval after
the upload ran at about half the speed of the next ones), before the first MDM recall and after
each one. The recall runs ``--rounds`` times (default 3), each time the *first* recall of the
files (the catalog put back as registered, the cache and the recipes emptied: new keys, new
encryptions), and each round's ratios are against the mean of the references run just before
and just after it, so that a machine that speeds up or slows down (these are shared: getscu
alone swung between 313 and 740 inst/s in one session) moves the reference with it. The
medians over the rounds are the result; every round and every reference is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.pacs import run_getscu, run_plain_pynetdicom  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.helpers.orthanc import orthanc_server  # noqa: E402
from tests.helpers.pki import build_test_pki  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402
from tests.integration.test_keys_threshold import Fleet, LocalPki, N  # noqa: E402
from tests.integration.test_recall_orthanc import (  # noqa: E402
    SECRET,
    RecallFleet,
    site_mapping,
    write_settings,
)

from mdm._log import quiet_pynetdicom  # noqa: E402
from mdm.catalog import access, staging  # noqa: E402
from mdm.catalog.db import CatalogDatabases  # noqa: E402
from mdm.catalog.migrations import upgrade  # noqa: E402
from mdm.catalog.models import (  # noqa: E402
    Entry,
    EntryKind,
    Replica,
    ReplicaState,
    StageFile,
    StageState,
)
from mdm.dicom.corpus import CorpusSpec, write  # noqa: E402
from mdm.dicom.pacs import Pacs  # noqa: E402
from mdm.keystore import KeyStore, new_key  # noqa: E402
from mdm.settings import Settings  # noqa: E402
from mdm.workers.instance import anonymizer_from, service_caller  # noqa: E402
from mdm.workers.registrar import Registrar  # noqa: E402


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes *pids* and their finished
    children (the workers' getscu processes), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime (14-17)
    return total / tick


def children_cpu() -> float:
    """CPU seconds of the finished child processes (getscu, the recall workers)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Cpu:
    """CPU seconds spent while a block runs: by this process, its children, Orthanc, the key
    servers. Wall-clock ratios swing with the load of a shared machine; CPU per instance is
    what the pipeline costs, and what decides the throughput on a machine of given cores."""

    def __init__(self, orthanc: int, keyservers: list[int]) -> None:
        self.orthanc, self.keyservers = orthanc, keyservers
        self.clients: list[int] = []  # running client processes (the recall workers)

    def _now(self) -> tuple[float, float, float]:
        own = time.process_time() + children_cpu() + cpu_of(self.clients)
        return own, cpu_of([self.orthanc]), cpu_of(self.keyservers)

    def __enter__(self) -> Cpu:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return  # a worker died: let its error through, nothing to measure
        end = self._now()
        self.client, self.pacs, self.keys = (e - s for e, s in zip(end, self.start, strict=True))


def recall(
    settings_file: Path, settings: Settings, workers: int, threads: int, cpu: Cpu, batch: int = 64
) -> tuple[float, int]:
    """Start *workers* worker processes (a running service, as in production), then queue
    every file and time until all are ONLINE; (seconds, files ONLINE). Worker start-up
    (imports, connections) is not timed; its CPU is excluded from *cpu* too."""
    dbs = CatalogDatabases(settings.catalog.database_url)
    caller = service_caller(settings)
    cmd = [sys.executable, "-m", "mdm", "--settings", str(settings_file)]
    procs = [
        subprocess.Popen(
            [
                *cmd,
                "worker",
                "recall",
                "--threads",
                str(threads),
                "--batch",
                str(batch),
                "--poll",
                "0.05",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    logs: list[list[str]] = [[] for _ in procs]
    recorded = Recorded()
    readers = [
        threading.Thread(target=recorded.follow, args=(p, log), daemon=True)
        for p, log in zip(procs, logs, strict=True)
    ]  # drained all along: a full pipe would stall a worker that reports every batch
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 120
        while not all(any("ready" in line for line in log) for log in logs):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise SystemExit(f"a worker did not start: {logs}")
            time.sleep(0.05)
        with dbs.catalog.session() as s:
            lfns = list(s.scalars(select(Entry.path).where(Entry.kind == EntryKind.FILE)))
        online_q = select(func.count(Replica.id)).where(
            Replica.se == settings.storage.name, Replica.state == ReplicaState.ONLINE
        )
        done_q = select(func.count(StageFile.id)).where(
            StageFile.state.in_([StageState.COMPLETED, StageState.FAILED, StageState.CANCELLED])
        )
        cpu.clients = [p.pid for p in procs]
        with cpu:
            t0 = time.perf_counter()
            recorded.expect(len(lfns))
            with dbs.catalog.session(write=True) as s:
                for i in range(0, len(lfns), 1000):
                    staging.submit(s, caller, lfns[i : i + 1000])
            # The workers say "batch: N completed, M failed" once a batch is recorded: the
            # bench waits on those lines rather than querying the catalog 20 times a second
            # (~0.1 s of CPU per recall the recall could use), and asks the catalog to confirm.
            looked = time.monotonic()
            while True:
                if recorded.done.wait(0.5) or time.monotonic() - looked > 2:
                    looked = time.monotonic()  # (and at least every 2 s, lines or not)
                    recorded.done.clear()
                    with dbs.catalog.session() as s:
                        if (s.scalar(done_q) or 0) >= len(lfns):
                            break
                if any(p.poll() is not None for p in procs):
                    raise SystemExit("a worker died during the recall")
            seconds = time.perf_counter() - t0
        with dbs.catalog.session() as s:
            online = s.scalar(online_q)
        return seconds, int(online or 0)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p, reader, log in zip(procs, readers, logs, strict=True):
            p.wait(timeout=60)
            reader.join(timeout=10)
            sys.stderr.write("".join(line for line in log if not line.startswith("batch:")))
        dbs.dispose()


class Recorded:
    """Counts the files the workers report recorded (their ``batch:`` lines on stderr);
    ``done`` is set once *expect*-ed many are, and again at every later report."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._files = 0
        self._expected = -1
        self._lock = threading.Lock()

    def expect(self, files: int) -> None:
        with self._lock:
            self._files, self._expected = 0, files

    def follow(self, proc: subprocess.Popen[str], log: list[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if line.startswith("batch:"):
                words = line.split()  # batch: N completed, M failed
                with self._lock:
                    self._files += int(words[1]) + int(words[3])
                    if 0 <= self._expected <= self._files:
                        self.done.set()


def key_rate(settings: Settings, count: int, threads: int = 16) -> float:
    """Registrations per second the key-server fleet sustains, alone (the worker's ceiling)."""
    stores = [KeyStore(settings.keystore, tls=settings.tls) for _ in range(threads)]
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(
                pool.map(
                    lambda i: stores[i % threads].register(str(uuid.uuid4()), new_key(), acl={}),
                    range(count),
                )
            )
        return count / (time.perf_counter() - t0)
    finally:
        for ks in stores:
            ks.close()


def key_rate_batched(settings: Settings, count: int, batch: int = 64, threads: int = 2) -> float:
    """Keys per second with ``register_many`` (*batch* keys per call, *threads* callers: what
    the recall workers do, one call per series)."""
    stores = [KeyStore(settings.keystore, tls=settings.tls) for _ in range(threads)]
    calls = max(1, count // batch)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(
                pool.map(
                    lambda i: stores[i % threads].register_many(
                        [(str(uuid.uuid4()), new_key(), {}) for _ in range(batch)]
                    ),
                    range(calls),
                )
            )
        return calls * batch / (time.perf_counter() - t0)
    finally:
        for ks in stores:
            ks.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1080)
    parser.add_argument("--workers", type=int, default=2, help="recall worker processes")
    parser.add_argument("--threads", type=int, default=2, help="pool threads per worker")
    parser.add_argument("--batch", type=int, default=64, help="files per claimed batch")
    parser.add_argument("--orthanc", default="/usr/sbin/Orthanc")
    parser.add_argument(
        "--engine", default="pynetdicom", choices=["pynetdicom", "dcmtk"], help="C-GET receiver"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="recalls of the same files, each from the same registered state, interleaved "
        "with the references (the medians are printed)",
    )
    args = parser.parse_args()
    quiet_pynetdicom()
    rounds: list[tuple[float, Cpu]] = []

    with tempfile.TemporaryDirectory(prefix="mdm-bench-recall-") as tmp:
        base = Path(tmp)
        spec = CorpusSpec.ct_bench(args.instances)
        rows = write(spec, base / "corpus")[: args.instances]
        total = sum((base / "corpus" / r.path).stat().st_size for r in rows)
        studies = sorted({r.study_uid for r in rows})
        print(f"corpus: {len(rows)} CT instances, {total / 1e6:.1f} MB, {len(studies)} studies")
        pki = build_test_pki(base / "pki")
        local = LocalPki.copy_of(pki, base / "kspki")
        fleet: Fleet = RecallFleet(base / "keyservers", local)
        dicom_port = free_port()
        try:
            for slot in range(1, N + 1):
                fleet.prepare(slot)
                fleet.start(slot)
            (base / "orthanc").mkdir()
            modalities = {"mdm": ("MDM", "127.0.0.1", dicom_port)}
            with orthanc_server(
                args.orthanc, modalities=modalities, workdir=base / "orthanc"
            ) as orthanc:
                subprocess.run(
                    ["storescu", "-aet", "MDM", "-aec", orthanc.aet, orthanc.host,
                     str(orthanc.dicom_port), *[str(base / "corpus" / r.path) for r in rows]],
                    env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}, check=True,
                    capture_output=True,
                )  # fmt: skip
                for slot in range(1, N + 1):
                    fleet.wait(slot)
                (base / "secret").write_bytes(SECRET)
                data = site_mapping(base, local, fleet, orthanc, free_port())
                data["dicom"]["port"] = dicom_port
                for section in data["dicom"]["pacs"].values():
                    section["engine"] = args.engine
                settings_file = base / "mdm.toml"
                write_settings(settings_file, data)
                settings = Settings.load(settings_file, environ={})
                dbs = CatalogDatabases(settings.catalog.database_url)
                upgrade(dbs)
                with dbs.catalog.session(write=True) as s:
                    access.set_acl(s, "/dicom", {"fqan:/mdm/radiology": ["read", "decrypt"]})
                t0 = time.perf_counter()
                reg = Registrar(
                    settings, dbs, service_caller(settings), anonymizer_from(settings),
                    Pacs.from_settings(settings, "main"),
                )  # fmt: skip
                summary = reg.run()
                print(
                    f"mdm register: {summary.created} instances in {time.perf_counter() - t0:.1f} s"
                )
                dbs.dispose()

                ks_pids = [p.pid for p in fleet.procs.values()]
                references = {
                    "dcmtk getscu": lambda o: run_getscu(orthanc, studies, o),
                    "plain pynetdicom C-GET": lambda o: run_plain_pynetdicom(orthanc, studies, o),
                }

                def reference(name: str) -> tuple[float, Cpu]:
                    out = base / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    with Cpu(orthanc.pid, ks_pids) as used:
                        t0 = time.perf_counter()
                        got = references[name](out)
                        seconds = time.perf_counter() - t0
                    if got != len(rows):
                        raise SystemExit(f"{name}: received {got} of {len(rows)} instances")
                    return seconds, used

                warm, _ = reference("dcmtk getscu")
                print(f"warm-up getscu pass (untimed in the ratios): {len(rows) / warm:.1f} inst/s")
                mdm_name = f"MDM recall, {args.workers}x{args.threads} threads, {args.engine}"
                if args.batch != 64:
                    mdm_name += f", batch {args.batch}"
                snapshot = base / "catalog-registered.db"
                db_file = Path(settings.catalog.database_url.removeprefix("sqlite:///"))
                copy_sqlite(db_file, snapshot)
                refs = [{name: reference(name) for name in references}]
                for r in range(args.rounds):
                    if r:  # the same first recall again: registered, nothing cached, no recipe
                        copy_sqlite(snapshot, db_file)
                        shutil.rmtree(settings.storage.cache_dir, ignore_errors=True)
                        st = settings.storage
                        recipes = st.recipe_dir or Path(st.cache_dir).parent / "recipes"
                        shutil.rmtree(recipes, ignore_errors=True)
                    mdm_cpu = Cpu(orthanc.pid, ks_pids)
                    seconds, online = recall(
                        settings_file, settings, args.workers, args.threads, mdm_cpu, args.batch
                    )
                    if online != len(rows):
                        raise SystemExit(f"recall: {online} of {len(rows)} files ONLINE")
                    rounds.append((seconds, mdm_cpu))
                    refs.append({name: reference(name) for name in references})
                keys_per_s = key_rate(settings, min(len(rows), 200))
                batched_per_s = key_rate_batched(settings, max(len(rows), 640))
        finally:
            for slot in list(fleet.procs):
                fleet.stop(slot)

    n = len(rows)
    print(
        f"\nkey servers alone: {keys_per_s:.1f} registrations/s (16 threads), the ceiling "
        "of a recall registering one key per call"
    )
    print(
        f"key servers alone, batched: {batched_per_s:.1f} keys/s (register_many, 64 keys per "
        "call, 2 threads: what the workers do, one call per series)"
    )
    print(
        f"\n{n} instances, {total / 1e6:.1f} MB, {len(rounds)} round(s); each recall is compared "
        "with the mean of the references run just before and just after it"
    )
    print(
        f"{'round':5s} {'recall s':>8s} {'inst/s':>7s} {'MB/s':>6s} {'getscu':>7s} "
        f"{'plain':>7s} {'x getscu':>8s} {'x plain':>8s} {'CPU ms/inst':>11s}"
    )
    x_getscu, x_plain, rates = [], [], []
    for r, (sec, c) in enumerate(rounds):
        ref = {name: (refs[r][name][0] + refs[r + 1][name][0]) / 2 for name in references}
        getscu, plain = ref["dcmtk getscu"], ref["plain pynetdicom C-GET"]
        x_getscu.append(getscu / sec)
        x_plain.append(plain / sec)
        rates.append(n / sec)
        every = c.client + c.pacs + c.keys
        print(
            f"{r + 1:5d} {sec:8.2f} {n / sec:7.1f} {total / 1e6 / sec:6.1f} {n / getscu:7.1f} "
            f"{n / plain:7.1f} {getscu / sec:8.2f} {plain / sec:8.2f} {every / n * 1e3:11.2f}"
        )
    print(
        f"median: {mdm_name}: {statistics.median(rates):.1f} inst/s, "
        f"{statistics.median(x_getscu):.2f} x getscu, {statistics.median(x_plain):.2f} x plain "
        "pynetdicom"
    )
    print("references, inst/s, in the order they ran (warm-up not included):")
    for name in references:
        print(f"  {name:42s} " + " / ".join(f"{n / ref[name][0]:.1f}" for ref in refs))
    middle = sorted(range(len(rounds)), key=lambda i: x_getscu[i])[len(rounds) // 2]
    cpu = {name: refs[0][name][1] for name in references}
    cpu[f"{mdm_name} (round {middle + 1})"] = rounds[middle][1]
    plain_cpu = cpu["plain pynetdicom C-GET"].client
    print(
        "\nCPU ms per instance (user + system): the client side, the PACS, the key servers "
        "(references: their first run; the recall: its median round)"
    )
    print(f"{'path':52s} {'client':>7s} {'Orthanc':>7s} {'keys':>7s} {'all':>7s} {'x plain':>8s}")
    for name, c in cpu.items():
        every = c.client + c.pacs + c.keys
        print(
            f"{name:52s} {c.client / n * 1e3:7.2f} {c.pacs / n * 1e3:7.2f} "
            f"{c.keys / n * 1e3:7.2f} {every / n * 1e3:7.2f} {c.client / plain_cpu:8.2f}"
        )


def copy_sqlite(src: Path, dst: Path) -> None:
    """Copy the SQLite database *src* over *dst* with SQLite's backup API (consistent whatever
    its journal mode; nobody else may have *dst* open)."""
    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(dst)) as b:
        a.backup(b)


if __name__ == "__main__":
    main()
