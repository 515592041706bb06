"""Five real key-server processes (``python -m mdm serve keyserver``) on loopback, real mutual
TLS with proxies made by the real ``voms-proxy-fake``: what the issue's "Proven" list asks.

The processes are started once for the module and reused; tests that take servers down run
last (pytest keeps file order) and the restart test brings them back on the same databases.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mdm.errors import NotEnoughShares, QuorumNotReached
from mdm.keyserver.masterkey import MasterKey
from mdm.keystore import KeyStore, RegisterResult, Retrieval, new_key
from mdm.pki.ca import Credential
from mdm.pki.tls import client_ssl_context
from mdm.settings import KeyStoreSettings, TlsSettings
from tests.helpers.pki import PkiFiles, shared_test_pki
from tests.helpers.ports import free_port
from tests.helpers.procs import wait_for_port

N, K = 5, 3


@dataclass(frozen=True)
class _Cred:
    cert: Path
    key: Path
    dn: str


@dataclass(frozen=True)
class LocalPki:
    """The files of the shared test PKI, copied next to the servers (see ``fleet``)."""

    ca_dir: Path
    vomsdir: Path
    host: _Cred
    alice: _Cred
    bob: _Cred
    proxies: dict[str, Path]

    @classmethod
    def copy_of(cls, pki: PkiFiles, dest: Path) -> LocalPki:
        shutil.copytree(pki.root, dest, symlinks=True)

        def at(path: Path) -> Path:
            return dest / Path(path).relative_to(pki.root)

        def cred(c: Credential) -> _Cred:
            return _Cred(at(c.cert), at(c.key), c.dn)

        return cls(
            at(pki.ca_dir),
            at(pki.vomsdir),
            cred(pki.host),
            cred(pki.alice),
            cred(pki.bob),
            {name: at(path) for name, path in pki.proxies.items()},
        )

    def server_tls(self) -> TlsSettings:
        return TlsSettings(
            cert=self.host.cert, key=self.host.key, ca_dir=self.ca_dir, vomsdir=self.vomsdir
        )


@dataclass
class Fleet:
    root: Path
    pki: LocalPki
    ports: dict[int, int] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def config(self, slot: int) -> Path:
        return self.root / f"ks{slot}" / "mdm.toml"

    def db(self, slot: int) -> Path:
        return self.root / f"ks{slot}" / "keys.db"

    def master(self, slot: int) -> MasterKey:
        return MasterKey.load(self.root / f"ks{slot}" / "master.key")

    def prepare(self, slot: int) -> None:
        d = self.root / f"ks{slot}"
        d.mkdir(parents=True)
        MasterKey.create(d / "master.key")
        self.ports[slot] = free_port()
        tls = self.pki.server_tls()
        self.config(slot).write_text(
            f'[tls]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
            f'ca_dir = "{tls.ca_dir}"\nvomsdir = "{tls.vomsdir}"\n'
            f"[keyserver]\nindex = {slot}\nport = {self.ports[slot]}\n"
            f'database_url = "sqlite:///{self.db(slot)}"\nmaster_key_file = "master.key"\n'
            f'creator_dns = ["{self.pki.alice.dn}", "{self.pki.bob.dn}"]\n'
        )

    def start(self, slot: int) -> None:
        log = (self.root / f"ks{slot}" / "server.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            "mdm",
            "--settings",
            str(self.config(slot)),
            "serve",
            "keyserver",
        ]
        self.procs[slot] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait(self, slot: int) -> None:
        try:
            wait_for_port(self.ports[slot], timeout=60, proc=self.procs[slot])
        except (RuntimeError, TimeoutError) as exc:
            log = (self.root / f"ks{slot}" / "server.log").read_text()
            raise RuntimeError(f"key server {slot} did not start: {exc}\n{log}") from exc

    def stop(self, slot: int) -> None:
        proc = self.procs.pop(slot, None)
        if proc is not None and proc.poll() is None:
            proc.kill()  # an outage, not a polite shutdown
            proc.wait(timeout=15)

    def urls(self) -> tuple[str, ...]:
        return tuple(f"https://localhost:{self.ports[s]}" for s in range(1, N + 1))

    def store(self, credential: str | tuple[Path, Path], **kw: object) -> KeyStore:
        if isinstance(credential, tuple):
            tls = TlsSettings(cert=credential[0], key=credential[1], ca_dir=self.pki.ca_dir)
        else:
            tls = TlsSettings(proxy=self.pki.proxies[credential], ca_dir=self.pki.ca_dir)
        settings = KeyStoreSettings(servers=self.urls(), threshold=K, timeout=10.0, **kw)  # type: ignore[arg-type]
        return KeyStore(settings, tls=tls)

    def rows(self, slot: int, sql: str, *args: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db(slot)) as conn:
            return list(conn.execute(sql, args))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    pki = shared_test_pki(tmp_path_factory)
    # Not under pytest's basetemp: a concurrent pytest session may prune old basetemps while
    # these servers still have their databases open there.
    root = Path(tempfile.mkdtemp(prefix="mdm-keyservers-"))
    f = Fleet(root, LocalPki.copy_of(pki, root / "pki"))
    try:
        for slot in range(1, N + 1):
            f.prepare(slot)
            f.start(slot)
        for slot in range(1, N + 1):
            f.wait(slot)
        yield f
    finally:
        for slot in list(f.procs):
            proc = f.procs.pop(slot)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        shutil.rmtree(f.root, ignore_errors=True)


def bob(f: Fleet) -> tuple[Path, Path]:
    return (f.pki.bob.cert, f.pki.bob.key)


def test_all_up_register_fetch_and_status(fleet: Fleet) -> None:
    key = new_key()
    with fleet.store("plain") as ks:
        assert all(s.ok for s in ks.status())
        assert ks.register("it-all", key).acked == (1, 2, 3, 4, 5)
        assert ks.fetch("it-all") == key
    owners = {
        fleet.rows(s, "select owner from key_shares where key_id='it-all'")[0][0]
        for s in range(1, N + 1)
    }
    assert owners == {fleet.pki.alice.dn}  # the proxy's end-entity DN, proxy CNs stripped


ENDPOINTS = [
    ("GET", "/v1/health"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/fetch"),
    ("PUT", "/v1/keys/it-all/share"),
    ("GET", "/v1/keys/it-all/share"),
    ("GET", "/v1/keys/it-all/meta"),
    ("GET", "/v1/keys/it-all/acl"),
    ("PUT", "/v1/keys/it-all/acl"),
    ("DELETE", "/v1/keys/it-all"),
]


def test_every_endpoint_denies_unauthenticated_and_unauthorized_and_audits(fleet: Fleet) -> None:
    url = fleet.urls()[0]
    anon = httpx.Client(base_url=url, verify=client_ssl_context(ca_dir=fleet.pki.ca_dir))
    other = httpx.Client(
        base_url=url,
        verify=client_ssl_context(
            cert=fleet.pki.bob.cert, key=fleet.pki.bob.key, ca_dir=fleet.pki.ca_dir
        ),
    )
    bodies = {
        "/v1/fetch": {"key_ids": ["it-all"]},
        "/v1/keys/it-all/acl": {
            "if_match": {"version": 1, "digest": "x"},
            "acl": {"version": 2, "prev": "x", "entries": {}},
        },
    }
    count = "select count(*) from audit_log where outcome=?"
    with anon, other:
        before = fleet.rows(1, count, "unauthenticated")[0][0]
        for method, path in ENDPOINTS:
            r = anon.request(method, path, json=bodies.get(path))
            assert r.status_code == 401, (method, path, r.text)
        assert fleet.rows(1, count, "unauthenticated")[0][0] == before + len(ENDPOINTS)
        denied = fleet.rows(1, count, "denied")[0][0]
        checked = 0
        for method, path in ENDPOINTS[2:]:
            r = other.request(method, path, json=bodies.get(path) or {"slot": 1})
            if path == "/v1/fetch":
                assert r.json()["results"][0]["error"]["type"] == "PermissionDenied"
            elif method == "PUT" and path.endswith("/share"):
                assert r.status_code == 400  # Bob may create, but this body is no share
                continue
            else:
                assert r.status_code == 403, (method, path, r.text)
            checked += 1
        assert fleet.rows(1, count, "denied")[0][0] == denied + checked
        rogue = fleet.rows(
            1, "select dn from audit_log where outcome='denied' order by seq desc limit 1"
        )[0][0]
        assert rogue == fleet.pki.bob.dn


def test_voms_group_grant_and_forged_or_expired_acs(fleet: Fleet) -> None:
    key = new_key()
    with fleet.store(bob(fleet)) as ks:
        ks.register("it-voms", key, acl={"fqan:/mdm/radiology": ["read"]})
    with fleet.store("voms") as member:  # AC: /mdm/radiology/Role=physician
        assert member.fetch("it-voms") == key
    for cred in ("plain", "expired_ac", "rogue_voms", "evil_voms", "unknown_vo"):
        with fleet.store(cred) as ks, pytest.raises(NotEnoughShares) as info:
            ks.fetch("it-voms")
        assert set(info.value.failures.values()) == {"denied"}, (cred, str(info.value))
    with fleet.store("untrusted") as ks, pytest.raises(NotEnoughShares) as info:
        ks.fetch("it-voms")  # a chain from an untrusted CA does not even get a TLS session
    assert len(info.value.failures) == N


def test_revoke_then_denied(fleet: Fleet) -> None:
    key = new_key()
    with fleet.store(bob(fleet)) as owner, fleet.store("plain") as alice:
        owner.register("it-rev", key)
        owner.grant("it-rev", f"dn:{fleet.pki.alice.dn}")
        assert alice.fetch("it-rev") == key
        res = owner.revoke("it-rev", f"dn:{fleet.pki.alice.dn}")
        assert res.acked == (1, 2, 3, 4, 5)
        with pytest.raises(NotEnoughShares):
            alice.fetch("it-rev")


def test_concurrent_grant_and_revoke_end_in_one_version(fleet: Fleet) -> None:
    with fleet.store(bob(fleet)) as owner:
        owner.register("it-race", new_key(), acl={f"dn:{fleet.pki.alice.dn}": ["read"]})
    errors: list[BaseException] = []

    def run(edit: str) -> None:
        try:
            with fleet.store(bob(fleet)) as ks:
                if edit == "grant":
                    ks.grant("it-race", "fqan:/mdm/cardio")
                else:
                    ks.revoke("it-race", f"dn:{fleet.pki.alice.dn}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in ("grant", "revoke") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with fleet.store(bob(fleet)) as ks:
        states, problems = ks.read_acls("it-race")
        final = ks.get_acl("it-race")
    assert not problems
    assert final.entries == {"fqan:/mdm/cardio": ["read"]}
    assert len(final.acked) >= 3
    assert max(st.version for st in states.values()) == final.version


def test_corrupted_share_is_detected_and_server_named(fleet: Fleet) -> None:
    key = new_key()
    with fleet.store("plain") as ks:
        ks.register("it-bad", key)
        mk = fleet.master(3)
        (wrapped,) = fleet.rows(3, "select wrapped from key_shares where key_id='it-bad'")[0]
        share = bytearray(mk.unwrap("it-bad", 3, bytes(wrapped)))  # type: ignore[arg-type]
        share[0] ^= 0x01
        with sqlite3.connect(fleet.db(3)) as conn:
            conn.execute(
                "update key_shares set wrapped=? where key_id='it-bad'",
                (mk.wrap("it-bad", 3, bytes(share)),),
            )
        got = ks.retrieve("it-bad", wait_all=True)
        assert got.key == key
        assert list(got.bad_servers) == [3]
        assert fleet.urls()[2] in str(got.bad_servers[3])


def mdm_cli(f: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = f.root / "client.toml"
    if not cfg.exists():
        servers = ", ".join(f'"{u}"' for u in f.urls())
        cfg.write_text(
            f'[tls]\nproxy = "{f.pki.proxies["voms"]}"\nca_dir = "{f.pki.ca_dir}"\n'
            f"[keystore]\nservers = [{servers}]\nthreshold = {K}\n"
        )
    cmd = [sys.executable, "-m", "mdm", "--settings", str(cfg), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_keys_cli_status_register_fetch_grant(fleet: Fleet, tmp_path: Path) -> None:
    import json

    out = mdm_cli(fleet, "keys", "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert (status["up"], status["k"], status["write_quorum"]) == (5, 3, 4)
    out = mdm_cli(fleet, "keys", "status")
    assert out.returncode == 0, out.stderr
    assert "key servers: 5/5 up, k=3, register quorum=4" in out.stdout
    assert out.stdout.count("up") >= 6, out.stdout  # the title and one row per server
    key_file, got_file = tmp_path / "key.bin", tmp_path / "got.bin"
    out = mdm_cli(
        fleet, "keys", "register", "it-cli", "--key-file", str(key_file), "--generate", "--json"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["acked"] == [1, 2, 3, 4, 5]
    assert (key_file.stat().st_mode & 0o777) == 0o600
    key = key_file.read_bytes()
    out = mdm_cli(fleet, "keys", "register", "it-cli2", "--key-file", str(key_file), "--generate")
    assert out.returncode == 2, out.stderr
    assert "already exists" in out.stderr
    assert key_file.read_bytes() == key, "an existing key file is never overwritten"
    out = mdm_cli(fleet, "keys", "fetch", "it-cli", "--out", str(got_file))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("key it-cli rebuilt from servers "), out.stdout
    assert got_file.read_bytes() == key_file.read_bytes()
    out = mdm_cli(fleet, "keys", "grant", "it-cli", "fqan:/mdm/cardio", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entries"] == {"fqan:/mdm/cardio": ["read"]}
    out = mdm_cli(fleet, "keys", "fetch", "it-nope", "--hex")
    assert out.returncode == 1
    assert "NotEnoughShares" in out.stderr
    assert "missing" in out.stderr


def test_batch_registration_over_tls_is_audited_per_key_and_verifies(fleet: Fleet) -> None:
    """``register_many`` against the real servers (mTLS, SQLite, one transaction per batch):
    every key is fetchable, each server wrote one record per key in request order, and
    ``mdm keyserver audit verify`` accepts the chain the batch appended."""
    keys = {f"it-batch-{i:02d}": new_key() for i in range(40)}
    before = fleet.rows(2, "select max(seq) from audit_log")[0][0]
    with fleet.store("plain") as ks:
        ks.register_batch = 32  # two requests per server
        out = ks.register_many([(kid, key, None) for kid, key in keys.items()])
        got = ks.fetch_many(list(keys))
    assert set(out) == set(got) == set(keys)
    for kid, key in keys.items():
        res, back = out[kid], got[kid]
        assert isinstance(res, RegisterResult), res
        assert res.acked == (1, 2, 3, 4, 5)
        assert isinstance(back, Retrieval), back
        assert back.key == key
    rows = fleet.rows(
        2,
        "select key_id, outcome, detail from audit_log where seq > ? and op = 'register' "
        "order by seq",
        before,
    )
    assert [r[0] for r in rows] == list(keys)
    assert {(r[1], r[2]) for r in rows} == {("granted", "registered (batch)")}
    verify = ["keyserver", "audit", "verify"]
    ok = subprocess.run(
        [sys.executable, "-m", "mdm", "--settings", str(fleet.config(2)), *verify],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "chain intact" in ok.stdout


def test_outages_one_two_three_down_then_restart(fleet: Fleet) -> None:
    early = new_key()
    with fleet.store("plain") as ks:
        ks.register("it-early", early)
    fleet.stop(5)  # 1 down
    with fleet.store("plain") as ks:
        one = new_key()
        assert ks.register("it-one", one).acked == (1, 2, 3, 4)
        assert ks.fetch("it-one") == one
    fleet.stop(4)  # 2 down
    with fleet.store("plain") as ks:
        assert ks.fetch("it-early") == early
        with pytest.raises(QuorumNotReached) as info:
            ks.register("it-two", new_key())
        assert info.value.failures == {4: "down", 5: "down"}
    for slot in (1, 2, 3):
        assert fleet.rows(slot, "select count(*) from key_shares where key_id='it-two'") == [(0,)]
    with fleet.store("plain", write_quorum=K) as ks:
        two = new_key()
        assert ks.register("it-two", two).acked == (1, 2, 3)
        assert ks.fetch("it-two") == two
    fleet.stop(3)  # 3 down
    with fleet.store("plain") as ks:
        with pytest.raises(NotEnoughShares) as info:
            ks.fetch("it-early")
        assert info.value.failures == {3: "down", 4: "down", 5: "down"}
        with pytest.raises(NotEnoughShares):
            ks.register("it-three", new_key())
    for slot in (1, 2):
        assert fleet.rows(slot, "select count(*) from key_shares where key_id='it-three'") == [(0,)]
    # restart 3, 4, 5 on their own databases; take 1 and 2 down: shares still served
    for slot in (3, 4, 5):
        fleet.start(slot)
    for slot in (3, 4, 5):
        fleet.wait(slot)
    fleet.stop(1)
    fleet.stop(2)
    with fleet.store("plain") as ks:
        got = ks.retrieve("it-early")
        assert got.key == early
        assert set(got.used) == {3, 4, 5}
        with pytest.raises(NotEnoughShares) as info:
            ks.fetch("it-one")  # registered while 5 was down: now only 3 and 4 hold it
        assert info.value.failures == {1: "down", 2: "down", 5: "missing"}


def test_audit_verify_detects_an_altered_record(fleet: Fleet) -> None:
    cmd = [
        sys.executable,
        "-m",
        "mdm",
        "--settings",
        str(fleet.config(4)),
        "keyserver",
        "audit",
        "verify",
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "chain intact" in ok.stdout
    with sqlite3.connect(fleet.db(4)) as conn:
        conn.execute("update audit_log set outcome='denied', detail='edited' where seq=2")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert "AuditChainBroken" in bad.stderr
    assert "record 2 was altered" in bad.stderr
