"""C-GET through dcmtk's ``getscu``: the same DIMSE retrieval, received by a C program.

Why: receiving a 0.5 MB CT instance costs pynetdicom 4-5 ms of Python CPU (about 35 PDUs
through its state machine), in the recall worker's own process, where it competes for the GIL
with anonymization and encryption. ``getscu`` receives the same instance for about 1.2 ms of
CPU in a process of its own, on another core (``bench/recall.py`` and
``../shared/notes/pacs-recipes.md`` have the figures). A PACS section chooses it with
``engine = "dcmtk"`` (C-GET only); the protocol, the PACS's view and the reconciliation are
the same as with the pynetdicom engine.

How. One ``getscu`` process per request (one association), writing into a fresh private spool
directory (``mdm.dicom.spool``: mode 0700, by default on ``/dev/shm`` so that originals never
reach a disk). getscu writes each instance completely, then sends its C-STORE response and logs
``Sending C-STORE Response``; so once as many files lie in the spool as responses were logged,
every one of them is complete (a file being written would be one more). Complete files are
read, removed at once, and handed to the sink while the retrieval goes on; the rest when getscu
exits. Statuses and sub-operation counts come from getscu's verbose log (which names no patient
and no UID); which instances arrived comes from the files, and what C-FIND promised but never
came is ``missing``, exactly as in ``retrieve.get``.

getscu writes bit-preserving (``+B``): each file holds the dataset exactly as the PACS sent
it, as pynetdicom receives it. Its default mode parses and re-encodes the dataset, and gave
sequences the PACS sent with explicit lengths undefined ones; the anonymized bytes then
depended on the engine, and a file recalled through one engine could not be recalled again
through the other (its replay refused as a new version). ``+B`` also spares getscu that parse
(~0.2 ms of CPU per CT instance). Parsing no dataset, it needs few dictionary entries: it is
given a small dictionary built from dcmtk's own (``small_dictionary``), which saves most of the
CPU of each start.

Limits: getscu proposes uncompressed transfer syntaxes for the instances (``+x=``), so a PACS
must transcode compressed ones (Orthanc does); archives that cannot should keep the
pynetdicom engine. getscu gives no per-instance failure reason; ``Pacs.retrieve`` retries a
missing instance alone to tell which ones fail.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mdm.dicom import filemeta
from mdm.dicom.retrieve import RetrieveReport, RetrieveRequest
from mdm.dicom.scp import ReceivedInstance, Sink
from mdm.dicom.scu import Peer
from mdm.dicom.spool import new_spool
from mdm.errors import AssociationRejected, ConfigError, TransportError
from mdm.settings import PacsSettings

logger = logging.getLogger(__name__)

#: dcmtk's text for a final C-GET status -> the status code it stands for (PS3.4 C.4.3.1.4).
STATUS_CODES = {
    "Success": 0x0000,
    "Warning": 0xB000,
    "Cancel": 0xFE00,
    "Failed: OutOfResourcesNumberOfMatches": 0xA701,
    "Failed: OutOfResourcesSubOperations": 0xA702,
    "Failed: IdentifierDoesNotMatchSOPClass": 0xA900,
    "Failed: SOPClassNotSupported": 0x0122,
}
_RESPONSE = re.compile(r"Received C-GET Response \((?P<status>[^)]*)\)")
_COUNT = re.compile(r"Number of (?P<kind>Completed|Failed|Warning) Suboperations\s*:\s*(?P<n>\d+)")
_FILE = re.compile(r"^(?:[A-Za-z]+\.)?(?P<uid>[0-9][0-9.]*)$")  # +B names files by UID alone
MAX_PDU = 131072  # dcmtk's upper bound for the PDU size it accepts
_TAIL = 20  # log lines kept to explain an unexpected end


def binary(name: str = "getscu") -> str:
    """The getscu executable, or ConfigError naming the Debian package that provides it."""
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"the dcmtk retrieval engine needs {name!r} (Debian package dcmtk), not found",
            key="dicom.getscu",
        )
    return found


def get(
    program: str,
    calling_aet: str,
    settings: PacsSettings,
    peer: Peer,
    request: RetrieveRequest,
    sink: Sink,
    spool_root: str = "",
    stopped: Callable[[], bool] = lambda: False,
) -> RetrieveReport:
    """C-GET *request* with getscu, delivering each instance to *sink* as it completes.

    Once *stopped()* (the consumer left, or another association failed), getscu is killed:
    its association aborts, so the PACS stops sending instead of filling the spool.
    """
    report = RetrieveReport(peer.name, "c-get", request, request.expected_uids())
    spool = new_spool(spool_root)
    start = time.perf_counter()
    try:
        with subprocess.Popen(
            _command(program, calling_aet, settings, peer, request, spool),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment(),
        ) as proc:
            if proc.stderr is None:  # cannot happen with stderr=PIPE; keeps mypy and -O honest
                raise RuntimeError("getscu started without a pipe for its log")
            try:
                log = _follow(proc.stderr.fileno(), spool, report, sink, stopped)
            finally:
                if proc.poll() is None:
                    proc.kill()
        if not stopped():
            _deliver(spool, report, sink, room=None)  # getscu has exited: every file is whole
    finally:
        shutil.rmtree(spool, ignore_errors=True)
        report.seconds = time.perf_counter() - start
    _finish(report, log, proc.returncode, peer)
    return report


def environment() -> dict[str, str]:
    """getscu's environment: ``TCP_NODELAY`` (dcmtk's switch; ../shared/notes/pacs-recipes.md),
    ``PATH``, and ``DCMDICTPATH`` naming the small dictionary of ``small_dictionary``."""
    env = {"TCP_NODELAY": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    small = small_dictionary()
    if small is not None:
        env["DCMDICTPATH"] = str(small)
    return env


#: Where Debian and source builds of dcmtk keep their main data dictionary.
DICTIONARY_GLOBS = ("/usr/share/libdcmtk*/dicom.dic", "/usr/share/dcmtk*/dicom.dic",
                    "/usr/local/share/dcmtk*/dicom.dic")  # fmt: skip
#: What getscu ``+B`` looks up: command sets (0000), the file meta it writes (0002), the keys it
#: sends and the failed-instance list a final response may carry.
_KEPT = re.compile(
    r"^\((?:0000|0002),[0-9A-Fa-fx]{4}\)|^\((?:0008,0016|0008,0018|0008,0052|0008,0058|"
    r"0020,000D|0020,000E)\)"
)
_small: Path | None = None  # the process's small dictionary, once built
_small_tried = False  # and whether it was looked for (None after that: none found)


def small_dictionary() -> Path | None:
    """A data dictionary of only what getscu ``+B`` needs, built once per process from dcmtk's
    own ``dicom.dic``; None (getscu's default dictionaries) when that is not found.

    Why: with ``+B`` getscu parses no dataset, yet it loads dcmtk's full text dictionaries at
    every start (~5,000 entries, ``private.dic`` included): 22 of its 26 ms of CPU per start,
    and the recall starts one getscu per series (~0.4 ms per CT instance; docs/recall.md).
    The entries kept are dcmtk's own lines, so names and VRs are the ones it would use."""
    global _small, _small_tried
    if _small_tried and (_small is None or _small.exists()):
        return _small  # (a temp cleaner may remove it from a long-running worker: rebuilt)
    built = None
    sources = [p for p in os.environ.get("DCMDICTPATH", "").split(os.pathsep)
               if Path(p).name == "dicom.dic"]  # fmt: skip
    sources += sorted(str(p) for pattern in DICTIONARY_GLOBS for p in Path("/").glob(pattern[1:]))
    for source in sources:
        try:
            lines = Path(source).read_text(encoding="latin-1").splitlines()
        except OSError:
            continue
        kept = [line for line in lines if _KEPT.match(line)]
        if len(kept) < 40:  # not a dcmtk dictionary after all
            continue
        folder = Path(tempfile.mkdtemp(prefix="mdm-dcmdict-"))
        built = folder / "dicom.dic"
        built.write_text("\n".join(kept) + "\n", encoding="latin-1")
        atexit.register(shutil.rmtree, folder, True)
        break
    _small, _small_tried = built, True  # two threads may both build one: both removed at exit
    return built


def _command(
    program: str,
    calling_aet: str,
    settings: PacsSettings,
    peer: Peer,
    request: RetrieveRequest,
    spool: Path,
) -> list[str]:
    keys = [f"QueryRetrieveLevel={request.level}", f"StudyInstanceUID={request.study_uid}"]
    ident = request.identifier()  # validates the level's keys (IMAGE needs the series)
    if request.level in ("SERIES", "IMAGE"):
        keys.append(f"SeriesInstanceUID={ident.SeriesInstanceUID}")
    if request.level == "IMAGE":
        keys.append("SOPInstanceUID=" + "\\".join(request.sop_instance_uids))
    pdu = settings.max_pdu if 0 < settings.max_pdu <= MAX_PDU else MAX_PDU
    return [
        program,
        "-v",
        "-S",
        "+B",  # bit-preserving: the dataset as the PACS sent it (module docstring)
        "-aet",
        calling_aet,
        "-aec",
        peer.aet,
        "-ta",
        str(max(1, round(settings.acse_timeout))),
        "-td",
        str(max(1, round(settings.dimse_timeout))),
        "-to",
        str(max(1, round(settings.network_timeout))),
        "-pdu",
        str(max(4096, pdu)),
        *(arg for key in keys for arg in ("-k", key)),
        "-od",
        str(spool),
        peer.host,
        str(peer.port),
    ]


def _follow(
    fd: int, spool: Path, report: RetrieveReport, sink: Sink, stopped: Callable[[], bool]
) -> list[str]:
    """Read getscu's log until it exits (or *stopped()*), delivering files as they become
    complete: getscu writes a file whole before it logs its C-STORE response. (If it could
    not write one, it still answers, with a failure status: then the file is missing, not
    half there.)"""
    pending, responses, handed, log = b"", 0, 0, []
    while not stopped() and (chunk := os.read(fd, 65536)):
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if "Sending C-STORE Response" in line:
                responses += 1
            elif _RESPONSE.search(line) or _COUNT.search(line) or line.startswith(("E:", "F:")):
                log.append(line)
        log = log[-_TAIL:]
        if responses > handed:
            handed += _deliver(spool, report, sink, room=responses - handed)
    return log


def _deliver(spool: Path, report: RetrieveReport, sink: Sink, room: int | None) -> int:
    """Hand the complete files in *spool* to *sink*, remove them, return how many.

    *room* = responses logged but not yet handed over: the files are all complete only when
    there are no more of them than that (counted here, not from the report, which counts an
    instance a PACS resent once). ``None``: getscu has exited, every file is whole.
    """
    names = sorted(e.name for e in os.scandir(spool) if e.is_file())
    if room is not None and len(names) > room:
        return 0  # one file is still being written: wait for its response
    for name in names:
        path = spool / name
        instance = _instance(path)
        path.unlink()
        report.deliver(sink, instance)
    return len(names)


def _instance(path: Path) -> ReceivedInstance:
    data = path.read_bytes()
    found = filemeta.read(data)
    meta = found.uids if found is not None else {}  # not Part 10: the file name says it
    match = _FILE.match(path.name)
    uid = meta.get(0x0003) or (match["uid"] if match else path.name)
    return ReceivedInstance(
        sop_class_uid=meta.get(0x0002, ""),
        sop_instance_uid=uid,
        transfer_syntax_uid=meta.get(0x0010, ""),
        data=data,
    )


def _finish(report: RetrieveReport, log: list[str], returncode: int, peer: Peer) -> None:
    """Final status and counts from the log; association problems raised as for pynetdicom."""
    finals = [m["status"] for line in log if (m := _RESPONSE.search(line))]
    finals = [s for s in finals if s != "Pending"]
    errors = [line[2:].strip() for line in log if line.startswith(("E:", "F:"))]
    if finals:
        text = finals[-1]
        report.status = STATUS_CODES.get(text, 0xC000)  # any other failure: "unable to process"
        if report.status != 0:
            report.error = report.error or f"getscu: final status {text}"
    else:
        report.status = None
        report.error = "getscu: " + ("; ".join(errors[-2:]) or f"exited with {returncode}")
        if any("Association Rejected" in e for e in errors):
            raise AssociationRejected(f"{peer} rejected the association: {errors[-1]}")
        if not report.received and any(
            w in e for e in errors for w in ("Connection refused", "Association Request Failed")
        ):
            raise TransportError(f"cannot reach {peer}: {errors[-1]}")
    attrs = {"Completed": "completed", "Failed": "failures", "Warning": "warnings"}
    for line in log:
        if m := _COUNT.search(line):
            setattr(report, attrs[m["kind"]], int(m["n"]))
