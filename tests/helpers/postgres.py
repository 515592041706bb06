"""A real PostgreSQL from the Debian package, started for the tests on a free loopback port.

``initdb`` refuses to run as root, so when we are root the cluster is created and run as the
``postgres`` user in a directory it owns (STYLE C12). Yields a SQLAlchemy URL for psycopg 3.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.ports import free_port
from tests.helpers.tools import require_tool


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return str(Path(found[-1]).parent)
    return str(Path(require_tool("initdb", package="postgresql")).parent)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throw-away cluster; yield ``postgresql+psycopg://mdm@127.0.0.1:PORT/mdm``."""
    bindir = _bindir()
    base = Path(tempfile.mkdtemp(prefix="mdm-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    log = base / "pg.log"
    try:
        subprocess.run([*as_user, f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "mdm",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-o", opts, "-l", str(log),
                        "-w", "-t", "60", "start"], check=True, capture_output=True)
        subprocess.run([*as_user, f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port),
                        "-U", "mdm", "mdm"], check=True, capture_output=True)
        yield f"postgresql+psycopg://mdm@127.0.0.1:{port}/mdm"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def new_database(url: str, name: str) -> str:
    """Create another database on the same server (one per test module keeps tests apart)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
