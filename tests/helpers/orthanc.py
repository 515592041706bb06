"""A real Orthanc (Debian ``orthanc``) for tests and benchmarks, started on free ports.

The configuration is generated in a temporary directory (notes/pacs-recipes.md §1):
no plugins, HTTP for loopback clients only (``RemoteAccessAllowed: false``, no authentication),
``DicomCheckCalledAet`` on (AE-title mistakes must show), no fsync per instance, and
``DicomAlwaysAllowFind/Get/Move/Store: false`` with ``DicomCheckModalityHost: true``: only the
AE titles listed in ``modalities`` may query or retrieve, and only from 127.0.0.1. That matters
because Orthanc 1.10 has no listen-address option and binds its DICOM port on every interface.
``TCP_NODELAY=1`` is set in its environment (Debian's dcmtk leaves Nagle on otherwise and
every DIMSE message waits ~40 ms).

Readiness is a 200 on ``/system``; stop is SIGTERM by pid (Orthanc needs 3-6 s to exit).
Seeding goes through REST ``POST /instances`` with ``Accept-Encoding: identity``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.ports import free_port
from tests.helpers.procs import running, wait_until

#: Modality name -> (AE title, host, port): who may query/retrieve and where C-MOVE may go.
Modalities = Mapping[str, tuple[str, str, int]]


@dataclass
class Orthanc:
    aet: str
    host: str
    dicom_port: int
    http_url: str
    workdir: Path
    pid: int

    def http(self) -> httpx.Client:
        # identity: otherwise Orthanc gzips every file on the fly (9 MB/s instead of 200).
        return httpx.Client(
            base_url=self.http_url, headers={"Accept-Encoding": "identity"}, timeout=60
        )

    def upload(self, files: Iterable[bytes]) -> list[str]:
        """POST each Part 10 file; returns the Orthanc instance IDs."""
        ids = []
        with self.http() as client:
            for data in files:
                r = client.post("/instances", content=data)
                r.raise_for_status()
                ids.append(r.json()["ID"])
        return ids

    def lookup(self, uid: str) -> str:
        """Orthanc ID of the study/series/instance with DICOM UID *uid*."""
        with self.http() as client:
            r = client.post("/tools/lookup", content=uid)
            r.raise_for_status()
            found = r.json()
        if not found:
            raise LookupError(f"Orthanc has no resource with UID {uid}")
        return str(found[0]["ID"])

    def storage_file(self, sop_instance_uid: str) -> Path:
        """The file Orthanc keeps an instance in (to damage it behind Orthanc's back)."""
        oid = self.lookup(sop_instance_uid)
        with self.http() as client:
            r = client.get(f"/instances/{oid}/attachments/dicom/info")
            r.raise_for_status()
            uuid = r.json()["Uuid"]
        return self.workdir / "storage" / uuid[:2] / uuid[2:4] / uuid

    def count_instances(self) -> int:
        with self.http() as client:
            return int(client.get("/statistics").json()["CountInstances"])

    def log(self) -> str:
        return (self.workdir / "orthanc.log").read_text(errors="replace")


def config(
    workdir: Path, *, aet: str, http_port: int, dicom_port: int, modalities: Modalities
) -> dict[str, object]:
    return {
        "Name": "MDM-TEST-ORTHANC",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "SyncStorageArea": False,
        # No in-memory copy of recently stored files: a test deletes one behind Orthanc's back.
        "MaximumStorageCacheSize": 0,
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "RegisteredUsers": {},
        "HttpDescribeErrors": True,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "HttpCompressionEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "StrictAetComparison": True,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "UnknownSopClassAccepted": False,
        "DicomScpTimeout": 30,
        "DicomScuTimeout": 10,
        "DicomThreadsCount": 4,
        "DicomAssociationCloseDelay": 0,
        "SynchronousCMove": True,
        "StorageAccessOnFind": "Always",
        "OverwriteInstances": False,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
        "SaveJobs": False,
        "DicomModalities": {
            name: {"AET": m_aet, "Host": host, "Port": port}
            for name, (m_aet, host, port) in modalities.items()
        },
        "DicomModalitiesInDatabase": False,
    }


@contextlib.contextmanager
def orthanc_server(
    binary: str,
    *,
    modalities: Modalities,
    aet: str = "ORTHANC",
    workdir: Path | None = None,
) -> Iterator[Orthanc]:
    """Run Orthanc until the block ends; *binary* comes from ``require_tool`` (or a bench)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mdm-orthanc-")))
        http_port, dicom_port = free_port(), free_port()
        cfg = config(
            workdir, aet=aet, http_port=http_port, dicom_port=dicom_port, modalities=modalities
        )
        (workdir / "orthanc.json").write_text(json.dumps(cfg, indent=2))
        env = {**os.environ, "TCP_NODELAY": "1"}
        proc: subprocess.Popen[bytes] = stack.enter_context(
            running(
                [binary, "--no-jobs", workdir / "orthanc.json"],
                workdir / "orthanc.log",
                env=env,
            )
        )
        url = f"http://127.0.0.1:{http_port}"

        def ready() -> bool:
            if proc.poll() is not None:
                log = (workdir / "orthanc.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{log}")
            return httpx.get(f"{url}/system", timeout=1).status_code == 200

        wait_until(ready, timeout=30)
        yield Orthanc(aet, "127.0.0.1", dicom_port, url, workdir, proc.pid)


def require_orthanc() -> str:
    from tests.helpers.tools import require_tool

    return require_tool("Orthanc", "/usr/sbin/Orthanc", package="orthanc")
