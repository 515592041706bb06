"""The demo's story: three users, three access levels, every claim checked.

Each step is run as one person with that person's own certificate against the real servers
of the grid, and records whether it did what the design says: *allowed* steps must succeed
and return the right data, *refused* steps must be refused by the server (an ``AuthError``,
or ``NotEnoughShares`` in which every key server said "denied"). A step whose part of MDM is
missing from this installation is *not run*, which fails the demo like a failed check: the
demo never pretends.

1. the hospital: the synthetic hospital goes into the PACS and is registered; the data
   manager grants level 1 to a grid user, level 2 to the researchers' VOMS group and level 3
   to a physician on one study;
2. the grid user (level 1): lists, stages, downloads ciphertext (with gfal2 when installed)
   and verifies it against the catalog's checksums; is refused the keys and the identity;
3. the researcher (level 2): finds MR studies by QIDO-RS, stages and decrypts them, opens the
   images with pydicom and finds no identifying value of the source; one key server is stopped
   midway and decryption goes on with k of the n - 1 left; a header is read through
   ``Client.open`` at the cost of one chunk; is refused the identity;
4. the physician (level 3): resolves a pseudonymous study to the real patient.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm.client import Client, GetEvents
from mdm.demo.grid import Grid, PartMissing
from mdm.demo.hospital import Hospital
from mdm.errors import AuthError, MDMError, NotEnoughShares

GFAL_PYTHON = "/usr/bin/python3"
#: Run by the system Python, which has Debian's gfal2 bindings (python3-gfal2).
_GFAL_SCRIPT = """
import sys, gfal2
ctx = gfal2.creat_context()
if sys.argv[1] == "ls":
    print("\\n".join(ctx.listdir(sys.argv[2])))
else:
    for url, dest in zip(sys.argv[2::2], sys.argv[3::2]):
        size = ctx.stat(url).st_size
        with open(dest, "wb") as out:
            out.write(ctx.open(url, "r").read_bytes(size))
"""
KILLED_SERVER = 2


class CheckFailed(Exception):
    """A step ran but did not do what the design says."""


@dataclass
class Step:
    user: str
    action: str
    expect: str  # "allowed" or "refused"
    ok: bool | None = None  # None: not run
    detail: str = ""
    seconds: float = 0.0
    nbytes: int = 0
    #: Seconds of the transfer alone (staging excluded), for the throughput column.
    transfer_seconds: float = 0.0

    @property
    def rate(self) -> str:
        seconds = self.transfer_seconds or self.seconds
        return f"{self.nbytes / seconds / 1e6:.1f} MB/s" if self.nbytes and seconds else ""

    @property
    def outcome(self) -> str:
        return {True: "ok", False: "FAILED", None: "NOT RUN"}[self.ok]


@dataclass
class Story:
    grid: Grid
    hospital: Hospital
    say: Callable[[str], None]
    steps: list[Step] = field(default_factory=list)
    clients: dict[str, Client] = field(default_factory=dict)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mdm-demo-")))
    studies: list[str] = field(default_factory=list)
    mr: list[str] = field(default_factory=list)
    decrypted: list[Path] = field(default_factory=list)

    # ---------------------------------------------------------------------- plumbing

    def client(self, who: str) -> Client:
        if who not in self.clients:
            self.clients[who] = Client(self.grid.settings_for(who), concurrency=4)
        return self.clients[who]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def step(
        self, user: str, action: str, fn: Callable[[Step], str], *, expect: str = "allowed"
    ) -> Step:
        """Run *fn* as one step; print one line; never raises."""
        st = Step(user, action, expect)
        t0 = time.monotonic()
        try:
            st.detail = fn(st)
            st.ok = expect == "allowed"
            if not st.ok:
                st.detail = f"was NOT refused: {st.detail}"
        except PartMissing as exc:
            st.ok, st.detail = None, f"not run: {exc}"
        except CheckFailed as exc:
            st.ok, st.detail = False, str(exc)
        except MDMError as exc:
            refused = _is_refusal(exc)
            st.ok = expect == "refused" and refused
            st.detail = f"{'refused' if refused else 'error'}: {type(exc).__name__}: {exc.message}"
            if refused and isinstance(exc, NotEnoughShares):
                st.detail = "refused: NotEnoughShares, every key server said 'denied'"
        except Exception as exc:
            st.ok, st.detail = False, f"unexpected {type(exc).__name__}: {exc}"
        st.seconds = time.monotonic() - t0
        self.steps.append(st)
        self.say(f"[{st.outcome:>7}] {user:<10} {action}: {st.detail} ({st.seconds:.1f}s)")
        return st

    def first_study(self) -> str:
        """The study most steps act on (the manager's grants found it)."""
        if not self.studies:
            raise PartMissing("no study was registered and granted")
        return self.studies[0]

    def need(self, *parts: str) -> None:
        self.grid.check_alive()
        for part in parts:
            if part in self.grid.missing:
                raise PartMissing(f"needs the {part}: {self.grid.missing[part]}")

    # ------------------------------------------------------------------------ story

    def run(self) -> bool:
        """Play every step in order (later steps use what earlier ones found); all ok?"""
        refused = "refused"
        for user, action, fn, expect in (
            ("hospital", "load the synthetic hospital into the PACS", self._load, ""),
            ("hospital", "register the PACS in the catalog (mdm register)", self._register, ""),
            ("manager", "grant levels 1, 2, 3 (catalog + all key servers)", self._grants, ""),
            ("gridUser", "list the catalog and the SE (WebDAV)", self._grid_list, ""),
            ("gridUser", "stage a study and download its ciphertext", self._grid_get, ""),
            ("gridUser", "fetch a file key", self._grid_key, refused),
            ("gridUser", "read a patient identity", self._identity_of_first, refused),
            ("researcher", "find MR studies by QIDO-RS", self._find_mr, ""),
            ("researcher", "stage, download, decrypt the first MR study", self._decrypt_first, ""),
            ("manager", f"stop key server {KILLED_SERVER} (outage)", self._kill, ""),
            (
                "researcher",
                "decrypt the other MR studies, 4 of 5 servers up",
                self._decrypt_rest,
                "",
            ),
            ("researcher", "open with pydicom: no identifying value left", self._check_anon, ""),
            ("researcher", "read one header with Client.open (range reads)", self._open_header, ""),
            ("researcher", "read a patient identity", self._identity_of_first, refused),
            ("physician", "resolve a pseudonymous study to the patient", self._resolve, ""),
        ):
            self.step(user, action, fn, expect=expect or "allowed")
        return all(s.ok for s in self.steps)

    # ---------------------------------------------------------------------- hospital

    def _load(self, st: Step) -> str:
        n = self.hospital.load(self.grid)
        st.nbytes = self.hospital.bytes_loaded
        studies = len(self.hospital.patients_of_study)
        return f"{n} instances, {studies} studies of {self.hospital.spec.patients} patients"

    def _register(self, st: Step) -> str:
        self.need("storage")
        done = self.hospital.register(self.grid)
        total = len(self.hospital.rows)
        if done["created"] + done["existing"] != total:
            raise CheckFailed(f"registered {done}, the PACS holds {total}")
        return f"{done['created']} files NEARLINE, identities in the vault"

    def _grants(self, st: Step) -> str:
        self.studies, group = grant_demo_access(self.grid, self.client("manager"))
        how = f"VOMS group {group[5:]}" if group.startswith("fqan:") else "DN"
        return f"{len(self.studies)} studies; researchers by {how}; physician on one study"

    # ---------------------------------------------------------------------- level 1

    def _grid_list(self, st: Step) -> str:
        self.need("storage")
        c = self.client("gridUser")
        study = self.first_study()
        files = c.files(study)
        if _gfal2_available():
            tool, series = "gfal2", self._gfal2(["ls", self._davs(study)]).split()
        else:
            tool, series = "the MDM client", [e.path for e in c.storage.ls(study)]
        if not files or not series:
            raise CheckFailed("nothing listed")
        return (
            f"{len(self.studies)} studies in the catalog; study 1 with {tool} (WebDAV): "
            f"{len(series)} series, {len(files)} files"
        )

    def _davs(self, lfn: str) -> str:
        return self.grid.urls["storage"].replace("https://", "davs://") + lfn

    def _gfal2(self, args: list[str]) -> str:
        """Run the gfal2 Python bindings as the grid user: ``ls URL`` or ``get URL DEST...``."""
        p = self.grid.people["gridUser"]
        env = {
            **os.environ,
            "X509_USER_CERT": str(p.cert),
            "X509_USER_KEY": str(p.key),
            "X509_CERT_DIR": str(self.grid.ca_dir),
        }
        proc = subprocess.run(
            [GFAL_PYTHON, "-c", _GFAL_SCRIPT, *args], env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise CheckFailed(f"gfal2 failed: {proc.stderr.strip()[-300:]}")
        return proc.stdout

    def _grid_get(self, st: Step) -> str:
        self.need("storage", "worker")
        c = self.client("gridUser")
        entries = c.files(self.first_study())
        _, states = c.stage([str(e["path"]) for e in entries], timeout=60)
        bad = {p: s for p, s in states.items() if s not in ("COMPLETED", "ONLINE")}
        if bad:
            raise CheckFailed(f"staging did not complete: {bad}")
        entries = c.files(self.first_study())  # sizes and checksums recorded by the recall
        out = self.work / "grid"
        out.mkdir()
        gfal = _gfal2_available()
        t0 = time.monotonic()
        if gfal:
            got = self._gfal2_download(entries, out)
        else:
            results = c.get([self.first_study()], out, decrypt=False)
            failed = [r for r in results if not r.ok]
            if failed:
                raise CheckFailed(f"{len(failed)} downloads failed: {failed[0].error}")
            got = {r.lfn: r.dest for r in results if r.dest is not None}
        st.transfer_seconds = time.monotonic() - t0
        for e in entries:
            data = Path(got[str(e["path"])]).read_bytes()
            st.nbytes += len(data)
            if hashlib.sha256(data).hexdigest() != e.get("sha256"):
                raise CheckFailed(f"ciphertext of {e['path']} differs from the catalog sha256")
            if data[:4] == b"DICM" or b"DICM" in data[:200]:
                raise CheckFailed("the downloaded file is not encrypted")
        tool = "gfal2" if gfal else "the MDM client (gfal2 not installed)"
        return f"{len(entries)} files with {tool}, sha256 verified, encrypted"

    def _gfal2_download(self, entries: list[dict[str, Any]], out: Path) -> dict[str, Path]:
        args, got = ["get"], {}
        for i, e in enumerate(entries):
            dest = out / f"{i}.mdm"
            args += [self._davs(str(e["path"])), str(dest)]
            got[str(e["path"])] = dest
        self._gfal2(args)
        return got

    def _grid_key(self, st: Step) -> str:
        self.need("storage", "worker")
        key_ids = [e["key_id"] for e in self.client("gridUser").files(self.first_study())]
        if not key_ids or not key_ids[0]:
            raise PartMissing("no recalled file has a key yet")
        self.client("gridUser").keys.fetch(str(key_ids[0]))
        return "the key servers released a key to a level-1 user"

    def _identity_of_first(self, st: Step) -> str:
        who = st.user
        study = self.first_study().rsplit("/", 1)[1]
        self.client(who).catalog.study_identity(study, reason="demo: should be refused")
        return "the vault released an identity"

    # ---------------------------------------------------------------------- level 2

    def _find_mr(self, st: Step) -> str:
        self.first_study()
        found = self.client("researcher").catalog.search_studies({"ModalitiesInStudy": "MR"})
        self.mr = [f"/dicom/{_tag(d, '0020000D')}" for d in found]
        want = sum("MR" in m for m in self.hospital.modalities_of_study.values())
        if len(self.mr) != want:
            raise CheckFailed(f"QIDO found {len(self.mr)} MR studies, the hospital has {want}")
        return f"{len(self.mr)} studies with MR series"

    def _decrypt(self, st: Step, studies: list[str], name: str) -> str:
        self.need("storage", "worker")
        if not studies:
            raise CheckFailed("no MR study to decrypt")
        out = self.work / "researcher"
        staged: list[float] = []
        events = GetEvents(on_total=lambda _n: staged.append(time.monotonic()))
        c = self.client("researcher")
        results = c.get(studies, out, decrypt=True, timeout=90, events=events)
        if staged:
            st.transfer_seconds = time.monotonic() - staged[0]
        failed = [r for r in results if not r.ok]
        if failed:
            raise CheckFailed(f"{len(failed)} of {len(results)} failed: {failed[0].error}")
        st.nbytes = sum(r.plaintext_bytes for r in results)
        self.decrypted += [r.dest for r in results if r.dest is not None]
        return f"{len(results)} files of {len(studies)} {name}"

    def _decrypt_first(self, st: Step) -> str:
        return self._decrypt(st, self.mr[:1], "study")

    def _kill(self, st: Step) -> str:
        self.grid.kill_keyserver(KILLED_SERVER)
        return f"port of key server {KILLED_SERVER} now refuses connections"

    def _decrypt_rest(self, st: Step) -> str:
        detail = self._decrypt(st, self.mr[1:], "studies")
        status = self.client("researcher").status()["keyservers"]
        down = [s["slot"] for s in status if not s.get("ok")]
        if down != [KILLED_SERVER]:
            raise CheckFailed(f"expected only key server {KILLED_SERVER} down, got {down}")
        return detail + f"; server {KILLED_SERVER} down"

    def _check_anon(self, st: Step) -> str:
        from pydicom import dcmread

        files = list(self.decrypted)
        if not files:
            raise PartMissing("nothing was decrypted")
        leaks: set[str] = set()
        for path in files:
            ds = dcmread(path)
            leaks |= _identifying_in(ds, self.hospital.identifying)
            raw = Path(path).read_bytes()
            leaks |= {v for v in self.hospital.identifying if len(v) > 5 and v.encode() in raw}
        if leaks:
            raise CheckFailed(f"identifying values found: {len(leaks)} (e.g. a {_kind(leaks)})")
        return f"{len(files)} images read; none of {len(self.hospital.identifying)} values found"

    def _open_header(self, st: Step) -> str:
        from pydicom import dcmread

        self.need("storage", "worker")
        c = self.client("researcher")
        lfn = str(c.files(self.mr[0])[0]["path"])
        _, states = c.stage([lfn], timeout=60)  # get released its pins: the copy may be gone
        if states.get(lfn) not in ("COMPLETED", "ONLINE"):
            raise CheckFailed(f"staging for open: {states.get(lfn)}")
        with c.open(lfn) as fh:
            ds = dcmread(fh, stop_before_pixels=True)
            requests = raw_requests(fh)
            size = fh.size
        return f"{ds.Modality} header of a {size} byte image in {requests} range request(s)"

    # ---------------------------------------------------------------------- level 3

    def _resolve(self, st: Step) -> str:
        study = self.first_study().rsplit("/", 1)[1]
        doc = self.client("physician").catalog.study_identity(study, reason="demo: treatment")
        original = doc["original"]
        expect = self.hospital.patients_of_study.get(str(original.get("StudyInstanceUID")))
        if expect is None or (original.get("PatientID"), original.get("PatientName")) != expect:
            raise CheckFailed("the vault's answer does not match the hospital's record")
        return "the pseudonymous study maps to the PACS patient (audited)"


def grant_demo_access(grid: Grid, manager: Client) -> tuple[list[str], str]:
    """The data manager's grants of the story; returns (studies, the researchers' principal).

    Level 1 to the grid user and level 2 to the researchers' VOMS group (the researcher's DN
    without voms-proxy-fake) on every study, level 3 to the physician on the first study.
    """
    studies = [str(e["path"]) for e in manager.catalog.ls("/dicom")]
    if not studies:
        raise CheckFailed("the catalog lists no study")
    researcher = grid.people["researcher"]
    group = f"fqan:{researcher.fqans[-1]}" if researcher.fqans else researcher.principal
    grants = [(s, grid.people["gridUser"].principal, 1) for s in studies]
    grants += [(s, group, 2) for s in studies]
    grants.append((studies[0], grid.people["physician"].principal, 3))
    for study, who, level in grants:
        change = manager.grant(study, who, level)
        if not change.ok:
            raise CheckFailed(f"grant of level {level} on {study} incomplete: {change}")
    return studies, group


def raw_requests(reader: Any) -> int:
    """Range requests made by the ``HttpRangeFile`` under a ``Client.open`` reader."""
    return int(reader._src.raw.requests)


def _is_refusal(exc: MDMError) -> bool:
    if isinstance(exc, AuthError):
        return True
    if isinstance(exc, NotEnoughShares):
        failures = getattr(exc, "failures", {}) or {}
        return bool(failures) and all(r == "denied" for r in failures.values())
    return False


def _tag(dataset: dict[str, Any], tag: str) -> str:
    return str(dataset[tag]["Value"][0])


def _identifying_in(ds: Any, identifying: set[str]) -> set[str]:
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR in ("SQ", "OB", "OW", "UN"):
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        for v in values:
            if str(v) in identifying:
                found.add(str(v))
    return found


def _kind(values: set[str]) -> str:
    sample = sorted(values)[0]
    return "UID" if sample[:2].isdigit() and "." in sample else "name or ID"


@functools.cache
def _gfal2_available() -> bool:
    if not Path(GFAL_PYTHON).exists():
        return False
    probe = subprocess.run(
        [GFAL_PYTHON, "-c", "import gfal2"], capture_output=True, check=False, timeout=30
    )
    return probe.returncode == 0


@contextlib.contextmanager
def story(grid: Grid, hospital: Hospital, say: Callable[[str], None]) -> Iterator[Story]:
    s = Story(grid, hospital, say)
    try:
        yield s
    finally:
        s.close()


__all__ = ["Step", "Story", "grant_demo_access", "story"]
