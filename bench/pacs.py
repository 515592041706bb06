"""Raw retrieval from a real Orthanc: MDM's connector vs plain pynetdicom vs dcmtk getscu.

All in one run, on the same CT studies (~0.5 MB per instance, 90 per study), each instance
written to disk as received (Part 10 bytes, no decode), so the ratios compare like with like:

    .venv/bin/python bench/pacs.py                  # 1,080 instances (12 studies)
    .venv/bin/python bench/pacs.py --instances 270  # quicker
    .venv/bin/python bench/pacs.py --repeat 3       # median of 3 per row

Rows: dcmtk ``getscu`` (one invocation per study, TCP_NODELAY=1); plain pynetdicom C-GET (the
recipe of notes/pacs-recipes.md §3: one association, TCP_NODELAY, unlimited PDU, raw write);
MDM ``Pacs.retrieve`` by C-GET with 1 and with N associations (threads); MDM by C-MOVE to its
own storage SCP with N associations; MDM C-GET in N processes of one association each (a
pool started and warmed before timing, as a recall worker keeps its processes). Orthanc and
every client share this machine's cores, which favours the low-CPU dcmtk client (see the
notes' measurement caveats).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE, build_role, evt  # noqa: E402
from tests.helpers.orthanc import Orthanc, orthanc_server  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402

from mdm._log import quiet_pynetdicom  # noqa: E402
from mdm.dicom import scp  # noqa: E402
from mdm.dicom.corpus import CorpusSpec, write  # noqa: E402
from mdm.dicom.pacs import Pacs  # noqa: E402
from mdm.dicom.retrieve import RetrieveRequest  # noqa: E402
from mdm.dicom.scp import ReceivedInstance  # noqa: E402
from mdm.settings import DicomSettings, PacsSettings  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"


def writer(out: Path) -> Callable[[ReceivedInstance], None]:
    def sink(instance: ReceivedInstance) -> None:
        (out / f"{instance.sop_instance_uid}.dcm").write_bytes(instance.data)

    return sink


def run_getscu(orthanc: Orthanc, studies: list[str], out: Path) -> int:
    getscu = shutil.which("getscu") or "/usr/bin/getscu"
    for uid in studies:
        # One study per invocation: dcmtk 3.6.7 getscu segfaults after several query files.
        subprocess.run(
            [
                getscu,
                "-aet",
                "MDM",
                "-aec",
                orthanc.aet,
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={uid}",
                "-od",
                str(out),
                orthanc.host,
                str(orthanc.dicom_port),
            ],
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
            check=False,
            capture_output=True,
        )
    return len(list(out.iterdir()))


def run_plain_pynetdicom(orthanc: Orthanc, studies: list[str], out: Path) -> int:
    def on_store(event: evt.Event) -> int:
        path = out / f"{event.request.AffectedSOPInstanceUID}.dcm"  # type: ignore[union-attr]
        path.write_bytes(event.encoded_dataset())
        return 0

    def nodelay(event: evt.Event) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    ae = AE(ae_title="MDM")
    ae.maximum_pdu_size = 0
    ae.add_requested_context(GET)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        orthanc.host,
        orthanc.dicom_port,
        ae_title=orthanc.aet,
        ext_neg=[build_role(CT, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, nodelay)],
    )
    assert assoc.is_established
    for uid in studies:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = uid
        for _status, _ in assoc.send_c_get(q, GET):
            pass
    assoc.release()
    return len(list(out.iterdir()))


def run_mdm(
    pacs: Pacs, studies: list[str] | list[RetrieveRequest], out: Path, associations: int
) -> int:
    requests = [r if isinstance(r, RetrieveRequest) else RetrieveRequest(r) for r in studies]
    reports = pacs.retrieve(requests, writer(out), max_associations=associations)
    for report in reports:
        report.raise_for_failure()
    return sum(len(r.received) for r in reports)


def _process_worker(settings: PacsSettings, studies: list[str], out: str) -> int:
    quiet_pynetdicom()
    pacs = Pacs("bench", settings, DicomSettings(ae_title="MDM"))
    return run_mdm(pacs, studies, Path(out), 1)


def _warm(_: int) -> int:
    return len(Pacs.__name__)  # the import of this module (and of mdm.dicom) is the warm-up


def run_mdm_processes(
    pool: ProcessPoolExecutor, settings: PacsSettings, studies: list[str], out: Path, n: int
) -> int:
    """N processes, each with its own Pacs and one association: the GIL is per process."""
    shares = [studies[i::n] for i in range(n)]
    return sum(pool.map(_process_worker, [settings] * n, shares, [str(out)] * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1080)
    parser.add_argument("--associations", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--orthanc", default="/usr/sbin/Orthanc")
    args = parser.parse_args()
    quiet_pynetdicom()

    with tempfile.TemporaryDirectory(prefix="mdm-bench-pacs-") as tmp:
        base = Path(tmp)
        spec = CorpusSpec.ct_bench(args.instances)
        t0 = time.perf_counter()
        rows = write(spec, base / "corpus")
        rows = rows[: args.instances]
        total_bytes = sum((base / "corpus" / r.path).stat().st_size for r in rows)
        studies = sorted({r.study_uid for r in rows})
        print(
            f"corpus: {len(rows)} CT instances, {total_bytes / 1e6:.1f} MB, "
            f"{len(studies)} studies ({time.perf_counter() - t0:.1f} s to generate)"
        )

        dicom = DicomSettings(ae_title="MDM", host="127.0.0.1", port=free_port())
        receiver = scp.StorageReceiver()
        server = scp.start(dicom, receiver)
        assert server is not None
        try:
            (base / "orthanc").mkdir()
            with (
                contextlib.ExitStack() as stack,
                orthanc_server(
                    args.orthanc,
                    modalities={"mdm": ("MDM", "127.0.0.1", dicom.port)},
                    workdir=base / "orthanc",
                ) as orthanc,
            ):
                t0 = time.perf_counter()
                subprocess.run(
                    [
                        "storescu",
                        "-aet",
                        "MDM",
                        "-aec",
                        orthanc.aet,
                        orthanc.host,
                        str(orthanc.dicom_port),
                        *[str(base / "corpus" / r.path) for r in rows],
                    ],
                    env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
                    check=True,
                    capture_output=True,
                )
                print(
                    f"loaded into Orthanc by storescu in {time.perf_counter() - t0:.1f} s "
                    f"({orthanc.count_instances()} instances)"
                )
                settings = PacsSettings(aet=orthanc.aet, host=orthanc.host, port=orthanc.dicom_port)
                get_pacs = Pacs("bench", settings, dicom)
                moving = dataclasses.replace(settings, method="c-move")
                move_pacs = Pacs("bench", moving, dicom, receiver=receiver)
                n = args.associations
                # What a recall worker does: the expected UIDs come from the catalog, so the
                # reconciliation C-FIND is not part of the retrieval.
                planned = get_pacs.plan([RetrieveRequest(uid) for uid in studies])
                pool = stack.enter_context(
                    ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
                )
                list(pool.map(_warm, range(n)))
                runs: list[tuple[str, Callable[[Path], int]]] = [
                    ("dcmtk getscu (1 assoc/study)", lambda o: run_getscu(orthanc, studies, o)),
                    (
                        "plain pynetdicom C-GET (1 assoc)",
                        lambda o: run_plain_pynetdicom(orthanc, studies, o),
                    ),
                    ("MDM C-GET, 1 association", lambda o: run_mdm(get_pacs, studies, o, 1)),
                    (
                        "MDM C-GET, 1 assoc, pre-planned",
                        lambda o: run_mdm(get_pacs, planned, o, 1),
                    ),
                    (f"MDM C-GET, {n} associations", lambda o: run_mdm(get_pacs, studies, o, n)),
                    (f"MDM C-MOVE, {n} associations", lambda o: run_mdm(move_pacs, studies, o, n)),
                    (
                        f"MDM C-GET, {n} processes x 1 assoc",
                        lambda o: run_mdm_processes(pool, settings, studies, o, n),
                    ),
                ]
                # Rounds interleave the rows, so that load from other jobs on this shared
                # machine spreads over all of them instead of biasing whichever ran last.
                times: dict[str, list[float]] = {name: [] for name, _ in runs}
                for round_ in range(args.repeat):
                    for name, fn in runs:
                        out = base / "out"
                        shutil.rmtree(out, ignore_errors=True)
                        out.mkdir()
                        t0 = time.perf_counter()
                        got = fn(out)
                        times[name].append(time.perf_counter() - t0)
                        if got != len(rows):
                            raise SystemExit(f"{name}: received {got} of {len(rows)} instances")
                        print(
                            f"  round {round_ + 1} {name:40s} {times[name][-1]:6.2f} s", flush=True
                        )
                results = {name: statistics.median(t) for name, t in times.items()}
        finally:
            server.shutdown()

    getscu = results["dcmtk getscu (1 assoc/study)"]
    plain = results["plain pynetdicom C-GET (1 assoc)"]
    print(f"\n{len(rows)} instances, {total_bytes / 1e6:.1f} MB, median of {args.repeat} rounds:")
    print(f"{'path':40s} {'s':>7s} {'inst/s':>8s} {'MB/s':>7s} {'x getscu':>9s} {'x plain':>8s}")
    for name, seconds in results.items():
        print(
            f"{name:36s} {seconds:7.2f} {len(rows) / seconds:8.0f} "
            f"{total_bytes / 1e6 / seconds:7.1f} {getscu / seconds:9.2f} {plain / seconds:8.2f}"
        )


if __name__ == "__main__":
    main()
