"""The hospital's PACS for the local grid: Orthanc when installed, else pynetdicom's qrscp.

MDM is only a DICOM peer of the PACS (ARCHITECTURE.md, part 1), so the grid starts a real,
unmodified Q/R server as a child process on loopback free ports:

* **Orthanc** (Debian ``orthanc``): configured as in notes/pacs-recipes.md §1: no plugins, HTTP
  for loopback only, only the ``MDM`` AE title may query and retrieve, from 127.0.0.1. Loaded
  through its REST API (fast).
* **pynetdicom's qrscp app** (``python -m pynetdicom qrscp``, needs only pip packages): the
  fallback for a machine without Orthanc. Loaded with C-STORE. Absolute storage paths
  (relative ones are taken relative to pynetdicom's package directory, §6.1).

Both are stopped by pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mdm.errors import ConfigError, DicomError

ORTHANC = "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise DicomError(f"PACS exited with status {proc.returncode}: {tail}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise DicomError(f"PACS did not listen on port {port} within {timeout:.0f}s")


@dataclass
class RunningPacs:
    """A started PACS: what ``[dicom.pacs.<name>]`` needs, and how to load and stop it."""

    kind: str  # "orthanc" or "qrscp"
    aet: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    http_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def load(self, files: Iterable[bytes], calling_aet: str = "MDM") -> int:
        """Store Part 10 files in the PACS; returns how many were stored."""
        if self.http_url is not None:
            count = 0
            with httpx.Client(
                base_url=self.http_url, headers={"Accept-Encoding": "identity"}, timeout=60
            ) as client:
                for data in files:
                    client.post("/instances", content=data).raise_for_status()
                    count += 1
            return count
        return _cstore(files, self.aet, self.port, calling_aet)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _cstore(files: Iterable[bytes], aet: str, port: int, calling_aet: str) -> int:
    import io

    from pydicom import dcmread
    from pynetdicom import AE, StoragePresentationContexts

    from mdm._log import quiet_pynetdicom

    quiet_pynetdicom()
    datasets = [dcmread(io.BytesIO(data)) for data in files]
    ae = AE(ae_title=calling_aet)
    ae.requested_contexts = StoragePresentationContexts[:120]
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        raise DicomError(f"the PACS {aet} refused the association to store the hospital")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if status is None or int(getattr(status, "Status", 0xFFFF)) != 0:
                raise DicomError(f"C-STORE to {aet} failed")
    finally:
        assoc.release()
    return len(datasets)


def start_pacs(workdir: Path, *, kind: str = "auto", mdm_aet: str = "MDM",
               mdm_port: int = 0) -> RunningPacs:  # fmt: skip
    """Start a PACS in *workdir* (``kind``: auto, orthanc or qrscp) that lets *mdm_aet* in."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "auto":
        kind = "orthanc" if Path(ORTHANC).exists() or shutil.which("Orthanc") else "qrscp"
    if kind == "orthanc":
        return _orthanc(workdir, mdm_aet, mdm_port or free_port())
    if kind == "qrscp":
        return _qrscp(workdir, mdm_aet, mdm_port or free_port())
    raise ConfigError(f"unknown PACS kind {kind!r} (auto, orthanc or qrscp)", key="pacs")


def _orthanc(workdir: Path, mdm_aet: str, mdm_port: int) -> RunningPacs:
    binary = ORTHANC if Path(ORTHANC).exists() else shutil.which("Orthanc")
    if not binary:
        raise ConfigError("Orthanc is not installed (Debian package orthanc)", key="pacs")
    http_port, dicom_port, aet = free_port(), free_port(), "ORTHANC"
    cfg = {
        "Name": "MDM-DEMO-HOSPITAL",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "SyncStorageArea": False,
        "Plugins": [],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "HttpCompressionEnabled": False,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomScpTimeout": 30,
        "DicomAssociationCloseDelay": 0,
        "SynchronousCMove": True,
        "StorageAccessOnFind": "Always",
        "SaveJobs": False,
        "DicomModalities": {"mdm": {"AET": mdm_aet, "Host": "127.0.0.1", "Port": mdm_port}},
    }
    (workdir / "orthanc.json").write_text(json.dumps(cfg, indent=2))
    log = workdir / "orthanc.log"
    env = {**os.environ, "TCP_NODELAY": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--no-jobs", str(workdir / "orthanc.json")],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
        )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise DicomError(f"Orthanc exited with {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise DicomError("Orthanc did not answer within 30 s")
        time.sleep(0.1)
    return RunningPacs("orthanc", aet, dicom_port, workdir, proc, http_url=url)


def _qrscp(workdir: Path, mdm_aet: str, mdm_port: int) -> RunningPacs:
    port, aet = free_port(), "QRSCP"
    ini = workdir / "qrscp.ini"
    ini.write_text(
        "[DEFAULT]\n"
        f"    ae_title: {aet}\n    port: {port}\n    max_pdu: 16382\n"
        "    acse_timeout: 30\n    dimse_timeout: 30\n    network_timeout: 30\n"
        "    bind_address: 127.0.0.1\n"
        f"    instance_location: {workdir / 'instances'}\n"
        f"    database_location: {workdir / 'instances.sqlite'}\n"
        "    log_identifier: False\n"
        f"[{mdm_aet}]\n    address: 127.0.0.1\n    port: {mdm_port}\n"
    )
    log = workdir / "qrscp.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pynetdicom", "qrscp", "-c", str(ini), "-ll", "warn"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    _wait_port(port, proc, log, 30)
    return RunningPacs("qrscp", aet, port, workdir, proc)


__all__ = ["RunningPacs", "free_port", "start_pacs"]
