"""Key-store latency and throughput: 5 key-server processes, k=3, all up and one down.

Starts five real ``python -m mdm serve keyserver`` processes on loopback (mutual TLS with a
throw-away test CA, SQLite WAL, state changes fsynced), then measures with one client:

* a plain HTTPS GET (``/v1/health``) to server 1 over the same kind of keep-alive mTLS
  connection: the reference cost of one request to one server (all ratios are against it);
* one share GET from server 1 alone (authorization, unwrap, audit record);
* ``KeyStore.register`` (split + 5 parallel PUTs, quorum k+1) and ``KeyStore.fetch``
  (5 parallel GETs, first 3 verified shares, KCV check), sequentially (latency p50/p99 and
  ops/s) and fetch with 4 client threads (throughput);
* ``KeyStore.register_many`` with 64 keys per call (a recall batch: one ``POST
  /v1/register`` per server, one transaction each), reported per key;
* the same with server 5 killed.

Ratios are against the plain GET measured in the same run. Usage::

    .venv/bin/python bench/keystore.py [--n-ops 300]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mdm.keyserver.masterkey import MasterKey
from mdm.keystore import KeyStore, new_key
from mdm.pki.ca import CertificateAuthority
from mdm.pki.tls import client_ssl_context
from mdm.settings import KeyStoreSettings, TlsSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers.ports import free_port  # noqa: E402
from tests.helpers.procs import wait_for_port  # noqa: E402

N, K = 5, 3
BATCH = 64  # keys per register_many call: a recall worker's batch (one series)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed(fn: Callable[[int], object], n: int) -> tuple[list[float], float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t) * 1000)
    return lat, n / (time.perf_counter() - t0)


def threaded(fn: Callable[[int], object], n: int, threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, range(n)))
    return n / (time.perf_counter() - t0)


#: The bench user, made a key-server creator (it registers keys).
BENCH_DN = "/DC=org/DC=mdmtest/O=Bench/CN=Bench User"


def start_servers(
    root: Path, ca: CertificateAuthority, creator_dn: str = BENCH_DN
) -> tuple[dict[int, subprocess.Popen[bytes]], list[int]]:
    """N key servers (``mdm serve keyserver``, SQLite, mTLS) under *root*, ready."""
    host = ca.issue_host("localhost")
    procs, ports = {}, []
    for slot in range(1, N + 1):
        d = root / f"ks{slot}"
        d.mkdir()
        MasterKey.create(d / "master.key")
        port = free_port()
        ports.append(port)
        (d / "mdm.toml").write_text(
            f'[tls]\ncert = "{host.cert}"\nkey = "{host.key}"\nca_dir = "{ca.trust_dir}"\n'
            f"[keyserver]\nindex = {slot}\nport = {port}\nrate_limit_per_minute = 1000000\n"
            f'database_url = "sqlite:///{d / "keys.db"}"\nmaster_key_file = "master.key"\n'
            f'creator_dns = ["{creator_dn}"]\n'
        )
        log = (d / "server.log").open("wb")
        procs[slot] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mdm",
                "--settings",
                str(d / "mdm.toml"),
                "serve",
                "keyserver",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for slot, port in enumerate(ports, 1):
        wait_for_port(port, timeout=60, proc=procs[slot])
    return procs, ports


def run(n_ops: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mdm-bench-ks-") as tmp:
        root = Path(tmp)
        ca = CertificateAuthority.create(root / "ca")
        user = ca.issue_user("Bench User", o="Bench")
        procs, ports = start_servers(root, ca)
        try:
            tls = TlsSettings(cert=user.cert, key=user.key, ca_dir=ca.trust_dir)
            urls = tuple(f"https://localhost:{p}" for p in ports)
            ks = KeyStore(KeyStoreSettings(servers=urls, threshold=K), tls=tls)
            plain = httpx.Client(base_url=urls[0], verify=client_ssl_context(tls))
            rows: list[tuple[str, list[float], float]] = []
            for _ in range(20):  # warm up connections and caches
                plain.get("/v1/health")
                ks.status()
            lat, tput = timed(lambda i: plain.get("/v1/health").raise_for_status(), n_ops)
            rows.append(("plain HTTPS GET, 1 server", lat, tput))
            ref = statistics.median(lat)
            ks.register("bench-probe", new_key())
            lat, tput = timed(
                lambda i: plain.get("/v1/keys/bench-probe/share").raise_for_status(), n_ops
            )
            rows.append(("GET one share, 1 server (audited)", lat, tput))
            for label in ("all 5 up", "server 5 down"):
                tag = label.split()[0]
                keys = {f"bench-{tag}-{i}": new_key() for i in range(n_ops)}
                ids = list(keys)

                def register(i: int, ids: list[str] = ids, keys: dict[str, bytes] = keys) -> None:
                    ks.register(ids[i], keys[ids[i]])

                def fetch(i: int, ids: list[str] = ids, keys: dict[str, bytes] = keys) -> None:
                    assert ks.fetch(ids[i % len(ids)]) == keys[ids[i % len(ids)]]

                lat, tput = timed(register, n_ops)
                rows.append((f"register, {label}", lat, tput))

                many = {f"bench-{tag}-many-{i}": new_key() for i in range(n_ops)}
                chunks = [list(many)[i : i + BATCH] for i in range(0, len(many), BATCH)]

                def register_many(
                    i: int, chunks: list[list[str]] = chunks, many: dict[str, bytes] = many
                ) -> None:
                    out = ks.register_many([(kid, many[kid], None) for kid in chunks[i]])
                    assert all(not isinstance(r, Exception) for r in out.values()), out

                lat, _ = timed(register_many, len(chunks))
                lat = [x / BATCH for x in lat]  # per key (the calls carry BATCH keys each)
                name = f"register_many /{BATCH}, per key, {label}"
                rows.append((name, lat, 1000 / statistics.mean(lat)))

                lat, tput = timed(fetch, n_ops)
                rows.append((f"fetch, {label}", lat, tput))
                conc = threaded(fetch, n_ops, 4)
                rows.append((f"fetch x4 threads, {label}", [], conc))
                if label == "all 5 up":
                    procs[5].kill()
                    procs[5].wait()
            print(
                f"\nkey store, n={N} k={K}, {n_ops} ops each, loopback, mTLS, SQLite WAL "
                "(state changes fsynced)"
            )
            print(f"{'operation':40} {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>8} {'p50/GET':>8}")
            for name, lat, tput in rows:
                if lat:
                    p50, p99 = statistics.median(lat), pct(lat, 0.99)
                    print(f"{name:40} {p50:8.2f} {p99:8.2f} {tput:8.0f} {p50 / ref:8.1f}")
                else:
                    print(f"{name:40} {'':>8} {'':>8} {tput:8.0f} {'':>8}")
            ks.close()
            plain.close()
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=15)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-ops", type=int, default=300)
    args = ap.parse_args()
    run(args.n_ops)
