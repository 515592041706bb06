"""The local grid of ``mdm up`` and ``mdm demo``: every MDM part on loopback, in one directory.

What runs (ARCHITECTURE.md, "The parts"), each a real server over mutual TLS on a free
127.0.0.1 port:

* a test PKI (``mdm.pki.ca``): CA, host certificate, one certificate per person, a VOMS server
  for VO ``mdm`` and, when Debian's ``voms-proxy-fake`` is installed, VOMS proxies;
* the catalog on SQLite (file catalog, metadata catalog, identity vault, staging queue);
* n = 5 key servers, k = 3, each with its own SQLite database and master key;
* the storage element backed by the catalog, and the recall worker;
* the hospital's PACS: Orthanc when installed, else pynetdicom's qrscp (``mdm.demo.pacs``).

The HTTP servers run in threads of this process (``mdm.servers.run.ServerThread``, the same
uvicorn + identity layer as ``mdm serve``), which starts in a second and lets the demo stop one
key server on purpose. Each person gets a settings file ``<root>/people/<name>.toml`` usable
with ``mdm --settings``.

People (what each may do is granted by the story, not here):

=========== ============================================ ===========================
name        who                                          role in the grid
=========== ============================================ ===========================
manager     Dana Manager, O=Hospital                     catalog and key-server admin
gridUser    Gus Grid, O=Grid                              nobody special (level 1 later)
researcher  Rita Research, O=University, VOMS /mdm/research   (level 2 later)
physician   Paul Physician, O=Hospital                   (level 3 later)
worker      the recall worker's service certificate     catalog service, key creator
=========== ============================================ ===========================
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm.demo.pacs import RunningPacs, start_pacs
from mdm.settings import Settings

logger = logging.getLogger(__name__)

VO = "mdm"
RESEARCH_FQAN = "/mdm/research"
VOMS_HOST = "voms.localhost"
PEOPLE = {
    "manager": ("Dana Manager", "Hospital"),
    "gridUser": ("Gus Grid", "Grid"),
    "researcher": ("Rita Research", "University"),
    "physician": ("Paul Physician", "Hospital"),
    "worker": ("MDM Recall Worker", "Services"),
}
Say = Callable[[str], None]


class PartMissing(Exception):
    """A part of the grid that this installation of MDM cannot start (yet): the message says."""


@dataclass
class Person:
    name: str
    dn: str
    cert: Path
    key: Path
    proxy: Path | None = None
    fqans: tuple[str, ...] = ()

    @property
    def principal(self) -> str:
        return f"dn:{self.dn}"


@dataclass
class Grid:
    """Start with ``start()`` (or ``with Grid(root) as grid``); ``stop()`` ends every part."""

    root: Path
    n: int = 5
    k: int = 3
    pacs_kind: str = "auto"
    say: Say = field(default=lambda _msg: None)
    people: dict[str, Person] = field(default_factory=dict)
    urls: dict[str, Any] = field(default_factory=dict)
    pacs: RunningPacs | None = None
    _servers: list[Any] = field(default_factory=list)
    _keyservers: dict[int, Any] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    #: Parts that could not start, with why: the story reports the steps that need them.
    missing: dict[str, str] = field(default_factory=dict)
    worker_thread: Any = None

    # ----------------------------------------------------------------------- lifecycle

    def __enter__(self) -> Grid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Grid:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._pki()
            self._catalog()
            self._keyservers_start()
            self._pacs()
            self._storage_and_worker()
            self.write_settings()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Worker, then SE, then catalog and key servers, then the PACS."""
        self._stack.close()
        for srv in reversed(self._servers):
            srv.stop()
        self._servers.clear()
        self._keyservers.clear()
        if self.pacs is not None:
            self.pacs.stop()
            self.pacs = None

    # --------------------------------------------------------------------------- PKI

    def _pki(self) -> None:
        from mdm.pki.ca import CertificateAuthority

        ca = CertificateAuthority.create(self.root / "pki")
        self.ca_dir, self.vomsdir = ca.trust_dir, ca.vomsdir
        self.host = ca.issue_host("localhost")
        voms = ca.issue_voms(VO, VOMS_HOST)
        fake = shutil.which("voms-proxy-fake")
        for name, (cn, org) in PEOPLE.items():
            cred = ca.issue_user(cn, o=org)
            person = Person(name, cred.dn, cred.cert, cred.key)
            if name == "researcher" and fake:
                person.proxy = self._voms_proxy(fake, cred, voms, (f"/{VO}", RESEARCH_FQAN))
                person.fqans = (f"/{VO}", RESEARCH_FQAN)
            self.people[name] = person
        how = "VOMS proxy" if self.people["researcher"].proxy else "no voms-proxy-fake: by DN"
        self.say(f"test PKI: CA, host, {len(PEOPLE)} people ({how} for the researcher)")

    def _voms_proxy(self, tool: str, cred: Any, voms: Any, fqans: tuple[str, ...]) -> Path:
        out = self.root / "pki" / "proxies" / "researcher.pem"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [tool, "-cert", str(cred.cert), "-key", str(cred.key), "-certdir", str(self.ca_dir)]
        cmd += ["-rfc", "-hours", "24", "-out", str(out), "-hostcert", str(voms.cert)]
        cmd += ["-hostkey", str(voms.key), "-voms", VO, "-uri", f"{VOMS_HOST}:15000"]
        for f in fqans:
            cmd += ["-fqan", f]
        env = {**os.environ, "RANDFILE": str(out.parent / ".rnd")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0 or not out.exists():
            raise PartMissing(f"voms-proxy-fake failed: {proc.stderr.strip()[-300:]}")
        return out

    def server_tls(self) -> Any:
        from mdm.settings import TlsSettings

        return TlsSettings(
            cert=self.host.cert, key=self.host.key, ca_dir=self.ca_dir, vomsdir=self.vomsdir
        )

    def _serve(self, app: Any, name: str) -> Any:
        from mdm.servers.run import ServerThread

        srv = ServerThread(app, tls=self.server_tls(), name=name, log_level="warning")
        srv.start()
        self._servers.append(srv)
        return srv

    # -------------------------------------------------------------------- services

    def _catalog(self) -> None:
        from mdm.servers.catalog_app import create_app

        d = self.root / "catalog"
        d.mkdir(exist_ok=True)
        mgr, worker = self.people["manager"], self.people["worker"]
        cfg = {
            "database_url": f"sqlite:///{d / 'catalog.db'}",
            "vault_database_url": f"sqlite:///{d / 'vault.db'}",
            "admin_dns": [mgr.dn],
            "service_dns": [worker.dn, self.host.dn],
            "auto_upgrade": True,
        }
        settings = Settings.from_mapping({"catalog": cfg})
        self.catalog_settings = settings.catalog
        srv = self._serve(create_app(settings), "catalog")
        self.urls["catalog"] = srv.url
        self.say(f"catalog (SQLite) on {srv.url}")

    def _keyservers_start(self) -> None:
        from mdm.keyserver import MasterKey

        for i in range(1, self.n + 1):
            d = self.root / "keyservers" / str(i)
            d.mkdir(parents=True, exist_ok=True)
            if not (d / "master.key").exists():
                MasterKey.create(d / "master.key")
            self._keyservers[i] = self._keyserver(i)
        self.urls["keyservers"] = [self._keyservers[i].url for i in range(1, self.n + 1)]
        ports = ", ".join(str(self._keyservers[i].port) for i in range(1, self.n + 1))
        self.say(f"{self.n} key servers (any {self.k} rebuild a key) on ports {ports}")

    def _keyserver(self, i: int, port: int = 0) -> Any:
        from mdm.servers.keyserver_app import create_app
        from mdm.servers.run import ServerThread

        d = self.root / "keyservers" / str(i)
        ks = {
            "index": i,
            "database_url": f"sqlite:///{d / 'keys.db'}",
            "master_key_file": str(d / "master.key"),
            "admin_dns": [self.people["manager"].dn],
            "creator_dns": [self.people["worker"].dn],
        }
        app = create_app(Settings.from_mapping({"keyserver": ks}))
        srv = ServerThread(app, tls=self.server_tls(), port=port, name=f"keyserver-{i}",
                           log_level="warning")  # fmt: skip
        srv.start()
        self._servers.append(srv)
        return srv

    def check_alive(self) -> None:
        """Move a part that died since it started (the recall worker thread) to ``missing``."""
        if self.worker_thread is not None and not self.worker_thread.is_alive():
            self.missing["worker"] = "the recall worker stopped (see the log)"

    def kill_keyserver(self, i: int) -> None:
        """Stop key server *i* (its port then refuses connections): the outage the demo shows."""
        srv = self._keyservers.pop(i)
        srv.server.should_exit = True
        # An outage cuts open connections too. Abort them (no TLS close_notify exchange,
        # which idle keep-alive clients would never answer) on the server's own loop.
        for conn in list(srv.server.server_state.connections):
            conn.loop.call_soon_threadsafe(conn.transport.abort)
        srv.stop()
        self._servers.remove(srv)

    def restart_keyserver(self, i: int) -> None:
        port = int(self.urls["keyservers"][i - 1].rsplit(":", 1)[1])
        self._keyservers[i] = self._keyserver(i, port)

    def _pacs(self) -> None:
        self.pacs = start_pacs(self.root / "pacs", kind=self.pacs_kind, mdm_aet="MDM")
        self.say(f"PACS: {self.pacs.kind} (AE {self.pacs.aet}) on port {self.pacs.port}")

    def _storage_and_worker(self) -> None:
        """The catalog-backed SE and the recall worker, from ``mdm.servers``/``mdm.workers``."""
        from mdm.demo import parts

        try:
            se_app, backend = parts.storage_element_app(self.settings_for("worker", server=True))
        except PartMissing as exc:
            self.missing["storage"] = str(exc)
            self.say(f"storage element: NOT AVAILABLE ({exc})")
        else:
            from mdm.servers.run import ServerThread

            self._stack.callback(backend.close)  # after the server below has stopped (LIFO)
            srv = ServerThread(se_app, tls=self.server_tls(), name="se", log_level="warning")
            srv.start()
            self._stack.callback(srv.stop)
            self.urls["storage"] = srv.url
            self.say(f"storage element (WebDAV + Tape REST, catalog-backed) on {srv.url}")
        try:
            worker = parts.recall_worker(self.settings_for("worker", server=True))
        except PartMissing as exc:
            self.missing["worker"] = str(exc)
            self.say(f"recall worker: NOT AVAILABLE ({exc})")
        else:
            self.worker_thread = self._stack.enter_context(worker)
            self.say("recall worker running")

    # --------------------------------------------------------------------- settings

    def settings_for(self, name: str, *, server: bool = False) -> Settings:
        """The Settings *name* uses as a client (``server``: with the grid's server sections)."""
        p = self.people[name]
        tls: dict[str, Any] = {"ca_dir": str(self.ca_dir), "vomsdir": str(self.vomsdir)}
        if p.proxy is not None:
            tls["proxy"] = str(p.proxy)
        else:
            tls.update(cert=str(p.cert), key=str(p.key))
        data: dict[str, Any] = {
            "tls": tls,
            "catalog": {"url": self.urls.get("catalog", "")},
            "storage": {"url": self.urls.get("storage", "")},
            "keystore": {"servers": list(self.urls.get("keyservers", [])), "threshold": self.k},
        }
        if server:
            data["catalog"].update(dataclasses.asdict(self.catalog_settings))
            data["catalog"]["url"] = self.urls.get("catalog", "")
            data["storage"].update(cache_dir=str(self.root / "cache"), name="MDM-DEMO-SE")
            data["anonymize"] = {"secret_file": str(self._site_secret())}
            if self.pacs is not None:
                data["dicom"] = {
                    "ae_title": "MDM",
                    "pacs": {"hospital": {"aet": self.pacs.aet, "port": self.pacs.port}},
                }
        return Settings.from_mapping(data)

    def _site_secret(self) -> Path:
        path = self.root / "site.secret"
        if not path.exists():
            path.write_text(secrets.token_hex(32) + "\n")
            path.chmod(0o600)
        return path

    def write_settings(self) -> dict[str, Path]:
        """``<root>/people/<name>.toml`` for each person: ``mdm --settings FILE ls /dicom``."""
        from mdm.demo.toml import dumps

        out = {}
        folder = self.root / "people"
        folder.mkdir(exist_ok=True)
        for name in self.people:
            s = self.settings_for(name)
            doc = {
                "tls": {k: str(v) for k, v in dataclasses.asdict(s.tls).items() if v},
                "catalog": {"url": s.catalog.url},
                "storage": {"url": s.storage.url},
                "keystore": {"servers": list(s.keystore.servers), "threshold": self.k},
            }
            path = folder / f"{name}.toml"
            path.write_text(dumps(doc))
            out[name] = path
        return out


@contextlib.contextmanager
def running_grid(root: Path, **kw: Any) -> Iterator[Grid]:
    grid = Grid(root, **kw)
    grid.start()
    try:
        yield grid
    finally:
        grid.stop()


__all__ = ["PEOPLE", "RESEARCH_FQAN", "Grid", "PartMissing", "Person", "running_grid"]
