"""CPU cost of batch key registration (``KeyStore.register_many``) on five real key servers.

Starts five ``python -m mdm serve keyserver`` processes on loopback (mutual TLS with a
throw-away test CA, SQLite WAL, state changes fsynced, as shipped) and one client, then, for
the same number of calls:

* **reference**: a plain HTTPS POST of a body the size of one 64-key ``/v1/register`` body to
  every server (in parallel, like the key store does), on a route that reads nothing and
  answers at once (``POST /v1/health`` -> 405). It is the transport's share of the cost
  (TLS, HTTP, threads), measured in the same run, so the ratios compare across machines
  and loads;
* **register_many**: ``KeyStore.register_many`` with 64 keys per call (a recall batch).

Both run with 1 client thread (latency) and with ``--threads`` client threads (the fleet
saturated, as the recall workers drive it). For each, it prints keys/s and the CPU spent per
key, from ``/proc/<pid>/stat`` utime+stime of the five servers (summed) and from
``getrusage`` of the client, plus the ratio of each to the reference's CPU per key and the
servers' share of system time (TLS and sockets, SQLite writes and fsync).

Usage::

    .venv/bin/python bench/keyserver_register.py [--calls 40] [--threads 2] [--profile FILE]

``--profile FILE`` also records server 1 with py-spy (raw format, GIL only, 1000 Hz) during
the saturated run. To measure another tree (the code before a change) under the same
conditions, put its ``src`` first on the path: the client and the five servers then import it::

    PYTHONPATH=/tmp/before/src .venv/bin/python bench/keyserver_register.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from mdm.keystore import KeyStore, new_key
from mdm.pki.ca import CertificateAuthority
from mdm.pki.tls import client_ssl_context
from mdm.settings import KeyStoreSettings, TlsSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.keystore import start_servers  # noqa: E402

N, K = 5, 3
BATCH = 64  # keys per register_many call: a recall worker's batch (one series)
TICK = os.sysconf("SC_CLK_TCK")
USER_DN = "/DC=org/DC=mdmtest/O=Bench/CN=Bench User"


def proc_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system) of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime (fields 14, 15)


def servers_cpu(pids: list[int]) -> tuple[float, float]:
    times = [proc_cpu(p) for p in pids]
    return sum(u for u, _ in times), sum(s for _, s in times)


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Row:
    name: str
    keys: int
    wall: float
    server_cpu: float
    server_sys: float
    client_cpu: float

    @property
    def keys_per_s(self) -> float:
        return self.keys / self.wall

    @property
    def server_ms(self) -> float:
        return 1000 * self.server_cpu / self.keys

    @property
    def client_ms(self) -> float:
        return 1000 * self.client_cpu / self.keys


def measure(
    name: str, pids: list[int], calls: int, threads: int, fn: Callable[[int], object]
) -> Row:
    """Run fn(0..calls-1) on *threads* threads; CPU of the servers and of this process."""
    (u0, k0), c0, t0 = servers_cpu(pids), self_cpu(), time.perf_counter()
    if threads == 1:
        for i in range(calls):
            fn(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, range(calls)))
    wall = time.perf_counter() - t0
    (u1, k1), c1 = servers_cpu(pids), self_cpu()
    return Row(name, calls * BATCH, wall, (u1 - u0) + (k1 - k0), k1 - k0, c1 - c0)


def run(calls: int, threads: int, profile: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mdm-bench-ksreg-") as tmp:
        root = Path(tmp)
        ca = CertificateAuthority.create(root / "ca")
        user = ca.issue_user("Bench User", o="Bench")
        servers, ports = start_servers(root, ca, USER_DN)
        procs = list(servers.values())
        pids = [p.pid for p in procs]
        try:
            tls = TlsSettings(cert=user.cert, key=user.key, ca_dir=ca.trust_dir)
            urls = tuple(f"https://localhost:{p}" for p in ports)
            ks = KeyStore(KeyStoreSettings(servers=urls, threshold=K), tls=tls)
            ctx = client_ssl_context(tls)
            plains = [httpx.Client(base_url=u, verify=ctx) for u in urls]
            pool = ThreadPoolExecutor(2 * N)
            counter = iter(range(10**9))

            def register(_: int) -> None:
                batch_no = next(counter)
                items = [(f"bench-{batch_no}-{j}", new_key(), None) for j in range(BATCH)]
                out = ks.register_many(items)
                bad = [r for r in out.values() if isinstance(r, Exception)]
                assert not bad, bad[:3]

            for i in range(3):  # warm up connections, caches, and learn the body size
                register(i)
            sample = [(f"bench-size-{j}", new_key(), None) for j in range(BATCH)]
            from mdm.keystore.batch import prepare

            ready = [prepare(kid, key, acl, n=N, k=K) for kid, key, acl in sample]
            body = json.dumps({"keys": [{"key_id": p.key_id, **p.body(1)} for p in ready]})
            payload = body.encode()

            def plain_post(_: int) -> None:
                def one(c: httpx.Client) -> None:
                    r = c.post(
                        "/v1/health",
                        content=payload,
                        headers={"content-type": "application/json"},
                    )
                    assert r.status_code == 405, r.status_code

                list(pool.map(one, plains))

            for i in range(3):
                plain_post(i)

            rows: list[Row] = []
            rows.append(measure("reference: plain POST x5, 1 thread", pids, calls, 1, plain_post))
            rows.append(measure("register_many /64, 1 thread", pids, calls, 1, register))
            rows.append(
                measure(
                    f"reference: plain POST x5, {threads} threads", pids, calls, threads, plain_post
                )
            )
            spy = None
            if profile is not None:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--gil",
                        "--nonblocking",
                        "--rate",
                        "1000",
                        "-f",
                        "raw",
                        "-o",
                        str(profile),
                        "--pid",
                        str(pids[0]),
                    ],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            rows.append(
                measure(f"register_many /64, {threads} threads", pids, calls, threads, register)
            )
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(timeout=60)
            ks.close()
            for c in plains:
                c.close()
            pool.shutdown()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=15)

    import mdm

    print(
        f"\nbatch registration, n={N} k={K}, {BATCH} keys per call, {calls} calls per row, "
        f"loopback mTLS, SQLite WAL (fsynced), load average {os.getloadavg()[0]:.1f}, "
        f"mdm from {Path(mdm.__file__).parent}"
    )
    print(
        f"{'row':38} {'keys/s':>8} {'srv ms/key':>10} {'cli ms/key':>10} "
        f"{'srv x ref':>9} {'cli x ref':>9} {'srv sys%':>8}"
    )
    refs = {1: rows[0], threads: rows[2]}
    for row, nthreads in zip(rows, (1, 1, threads, threads), strict=True):
        ref = refs[nthreads]
        print(
            f"{row.name:38} {row.keys_per_s:8.0f} {row.server_ms:10.3f} {row.client_ms:10.3f} "
            f"{row.server_ms / max(ref.server_ms, 1e-9):9.1f} "
            f"{row.client_ms / max(ref.client_ms, 1e-9):9.1f} "
            f"{100 * row.server_sys / max(row.server_cpu, 1e-9):8.0f}"
        )
    reg = rows[3]
    print(
        f"saturated: {reg.keys_per_s:.0f} keys/s, {reg.server_ms + reg.client_ms:.2f} ms CPU per "
        f"key (servers {reg.server_ms:.2f} + client {reg.client_ms:.2f})"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=40, help="register_many calls per row")
    ap.add_argument("--threads", type=int, default=2, help="client threads, saturated rows")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy raw output (server 1)")
    args = ap.parse_args()
    run(args.calls, args.threads, args.profile)
