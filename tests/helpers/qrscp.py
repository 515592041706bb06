"""A second, stricter real Q/R server: dcmtk ``dcmqrscp`` (Debian ``dcmtk``).

Chosen over pynetdicom's ``qrscp`` app (notes/pacs-recipes.md §6): it de-duplicates STUDY and
SERIES answers correctly, is 3-4x faster, and is *strict* where Orthanc is lenient (it refuses
non-hierarchical queries), so tests against it catch MDM relying on Orthanc's leniency. Here it
also checks C-FIND and C-MOVE identifiers (``--check-find --check-move``).

The configuration is generated in a temporary directory: one AE title with a read/write
storage area open to the peers of the host table (MDM's storage SCP as the only C-MOVE
destination). dcmqrscp 3.6.7 has no listen-address option (it binds every interface); it forks
one child per association. It is loaded with ``storescu`` and stopped with SIGTERM by pid.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.ports import free_port
from tests.helpers.procs import running, wait_for_port


@dataclass
class DcmQrScp:
    aet: str
    host: str
    port: int
    workdir: Path
    pid: int

    def load(self, paths: Sequence[Path], storescu: str, calling_aet: str = "LOADER") -> None:
        """Store files with dcmtk ``storescu`` over one association; raise if any failed."""
        cmd = [storescu, "-aet", calling_aet, "-aec", self.aet, self.host, str(self.port)]
        result = subprocess.run(
            [*cmd, *map(str, paths)],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"storescu failed ({result.returncode}): {result.stderr[-2000:]}")

    def log(self) -> str:
        return (self.workdir / "dcmqrscp.log").read_text(errors="replace")


def config(port: int, aet: str, storage: Path, destinations: dict[str, tuple[str, int]]) -> str:
    hosts = "\n".join(
        f"{name.lower()} = ({dest_aet}, 127.0.0.1, {dest_port})"
        for name, (dest_aet, dest_port) in {**destinations}.items()
    )
    return f"""\
NetworkTCPPort  = {port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
{hosts}
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{aet}   {storage}   RW   (200, 1024mb)   ANY
AETable END
"""


@contextlib.contextmanager
def dcmqrscp_server(
    binary: str, *, destinations: dict[str, tuple[str, int]], aet: str = "DCMQRSCP"
) -> Iterator[DcmQrScp]:
    """Run dcmqrscp until the block ends. *destinations*: name -> (AE title, port) on loopback."""
    with tempfile.TemporaryDirectory(prefix="mdm-dcmqrscp-") as tmp:
        workdir = Path(tmp)
        storage = workdir / "db"
        storage.mkdir()
        port = free_port()
        cfg = workdir / "dcmqrscp.cfg"
        cfg.write_text(config(port, aet, storage, destinations))
        cmd = [binary, "--check-find", "--check-move", "-c", cfg]
        env = {**os.environ, "TCP_NODELAY": "1"}
        with running(cmd, workdir / "dcmqrscp.log", env=env, cwd=workdir) as proc:
            wait_for_port(port, proc=proc, timeout=15)
            yield DcmQrScp(aet, "127.0.0.1", port, workdir, proc.pid)
