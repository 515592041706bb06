"""HTTPS download throughput of an ONLINE file from the SE, against a C TLS file server.

    .venv/bin/python bench/se_download.py [--size-mib 256] [--repeat 3] [--tmpdir DIR]

The issue asks for a ratio against nginx over TLS (goal >= 0.8). The references measured in the
same run are nginx (Debian ``nginx``, when installed: TLS, sendfile, serving the same cached
file) and ``openssl s_server -WWW`` (C, OpenSSL, TLS 1.3 from the page cache). All are
downloaded by the same client, ``curl`` with the same client certificate, to /dev/null; the
best of ``--repeat`` alternating passes is reported, and the ratios SE / reference printed.

The SE side is the real stack of ``mdm serve se``: uvicorn + the identity protocol of
``mdm.servers.run`` (mutual TLS), ``create_app`` and a ``PosixNearline`` whose copy was staged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mdm.acl import Identity
from mdm.pki.ca import CertificateAuthority
from mdm.servers.run import ServerThread
from mdm.servers.se_app import create_app
from mdm.settings import TlsSettings
from mdm.storage import Grants, PosixNearline

MIB = 1 << 20
LFN = "/dicom/2.25.1/2.25.2/2.25.3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def curl_mb_s(url: str, ca: Path, cert: Path, key: Path) -> float:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "--cacert",
            str(ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "-w",
            "%{size_download} %{time_total}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.split()
    size, seconds = int(out[0]), float(out[1])
    return size / seconds / MIB


NGINX_CONF = """\
user root;
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"""


def start_nginx(prefix: Path, port: int, cert: Path, key: Path, root: Path) -> subprocess.Popen:
    """nginx in the foreground on *port*, serving *root* over TLS (stopped by the caller)."""
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, cert=cert, key=key, root=root))
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"nginx did not start: {(prefix / 'error.log').read_text()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args()
    if not shutil.which("curl") or not shutil.which("openssl"):
        sys.exit("needs curl and openssl on PATH")
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        root = Path(tmp)
        ca = CertificateAuthority.create(root / "pki")
        host = ca.issue_host("localhost")
        user = ca.issue_user("Bench User", o="Hospital")
        src = root / "archive" / LFN.lstrip("/")
        src.parent.mkdir(parents=True)
        with src.open("wb") as fh:
            block = os.urandom(MIB)
            for _ in range(args.size_mib):
                fh.write(block)
        grants = Grants.from_mapping(
            {"/dicom": {"list": [f"dn:{user.dn}"], "read": [f"dn:{user.dn}"]}}
        )
        backend = PosixNearline(root / "archive", root / "cache", grants)
        backend.stage(Identity(user.dn), [LFN])
        backend.recall_once()
        cached = backend.cache.path(LFN)
        tls = TlsSettings(cert=host.cert, key=host.key, ca_dir=ca.trust_dir)
        port = free_port()
        ref = subprocess.Popen(
            [
                "openssl",
                "s_server",
                "-quiet",
                "-WWW",
                "-accept",
                str(port),
                "-cert",
                str(host.cert),
                "-key",
                str(host.key),
            ],
            cwd=cached.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nginx = None
        if shutil.which("nginx"):
            nginx_port = free_port()
            nginx = start_nginx(root / "nginx", nginx_port, host.cert, host.key, cached.parent)
        best_nginx = 0.0
        try:
            time.sleep(0.5)
            with ServerThread(create_app(backend), tls=tls) as srv:
                se_url = f"https://localhost:{srv.port}{LFN}"
                ref_url = f"https://localhost:{port}/{cached.name}"
                best_se = best_ref = 0.0
                for _ in range(args.repeat):
                    best_ref = max(best_ref, curl_mb_s(ref_url, ca.cert_path, user.cert, user.key))
                    best_se = max(best_se, curl_mb_s(se_url, ca.cert_path, user.cert, user.key))
                    if nginx is not None:
                        url = f"https://localhost:{nginx_port}/{cached.name}"
                        best_nginx = max(
                            best_nginx, curl_mb_s(url, ca.cert_path, user.cert, user.key)
                        )
        finally:
            ref.terminate()
            ref.wait(10)
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
    print(f"file size            : {args.size_mib} MiB, best of {args.repeat}")
    print(f"openssl s_server -WWW: {best_ref:8.1f} MiB/s")
    if best_nginx:
        print(f"nginx (TLS, sendfile): {best_nginx:8.1f} MiB/s")
    print(f"mdm SE (uvicorn+mTLS): {best_se:8.1f} MiB/s")
    if best_nginx:
        print(f"ratio SE / nginx     : {best_se / best_nginx:.2f}   (goal >= 0.8)")
    print(f"ratio SE / s_server  : {best_se / best_ref:.2f}")


if __name__ == "__main__":
    main()
