"""Real mutual TLS over loopback: uvicorn through ``mdm.servers.run``, httpx as the client.

The app sees the caller's Identity in the request scope, computed once per connection from the
verified chain; proxies from the real ``voms-proxy-fake`` are accepted; untrusted or self-signed
clients never reach the app; a caller without a certificate gets a clean 401 problem+json.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import mdm.servers.run as run_module
from mdm.pki.chain import load_pem_certificates
from mdm.pki.names import subject_hash
from mdm.pki.tls import httpx_client, server_ssl_context
from mdm.servers import (
    EXCEPTION_HANDLERS,
    PROBLEM_JSON,
    ServerThread,
    credential_error,
    identity,
    require_identity,
    running_server,
)
from tests.helpers.pki import ALICE_DN, VOMS_FQANS, PkiFiles, shared_test_pki
from tests.helpers.tools import require_tool

CALLS: list[str] = []


async def whoami(request: Request) -> JSONResponse:
    CALLS.append(request.url.path)
    who = require_identity(request)
    tls = request.scope["extensions"]["tls"]
    return JSONResponse(
        {
            "dn": who.dn,
            "fqans": list(who.fqans),
            "proxy": who.is_proxy,
            "voms_error": who.attributes.get("voms_error"),
            "chain": len(tls["client_cert_chain"]),
        }
    )


async def peek(request: Request) -> JSONResponse:
    CALLS.append(request.url.path)
    who = identity(request)
    return JSONResponse({"dn": who.dn if who else None, "error": credential_error(request)})


def make_app() -> Starlette:
    routes = [Route("/whoami", whoami), Route("/peek", peek)]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return shared_test_pki(tmp_path_factory)


@pytest.fixture(scope="module")
def server(pki: PkiFiles) -> Iterator[ServerThread]:
    with running_server(make_app(), tls=pki.server_tls()) as srv:
        yield srv


def _client(pki: PkiFiles, srv: ServerThread, **cred: Any) -> httpx.Client:
    return httpx_client(ca_dir=pki.ca_dir, base_url=srv.url, timeout=10, **cred)


@pytest.mark.parametrize(
    ("cred", "fqans", "proxy", "chain"),
    [
        ("voms", VOMS_FQANS, True, 3),
        ("plain", (), True, 3),
        ("plain_py", (), True, 3),
        ("eec", (), False, 2),
    ],
)
def test_accepted_callers_reach_the_app_with_their_identity(
    pki: PkiFiles, server: ServerThread, cred: str, fqans: tuple[str, ...], proxy: bool, chain: int
) -> None:
    kw = (
        {"cert": pki.alice.cert, "key": pki.alice.key}
        if cred == "eec"
        else {"proxy": pki.proxies[cred]}
    )
    with _client(pki, server, **kw) as client:
        r = client.get("/whoami")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dn"] == ALICE_DN
    assert tuple(body["fqans"]) == fqans
    assert body["proxy"] is proxy
    assert body["chain"] == chain  # OpenSSL's verified chain includes the CA
    assert body["voms_error"] is None


@pytest.mark.parametrize("cred", ["rogue_voms", "evil_voms", "expired_ac", "unknown_vo"])
def test_bad_acs_connect_but_carry_no_fqans(pki: PkiFiles, server: ServerThread, cred: str) -> None:
    with _client(pki, server, proxy=pki.proxies[cred]) as client:
        body = client.get("/whoami").json()
    assert body["dn"] == ALICE_DN
    assert body["fqans"] == []
    assert body["voms_error"]


def test_no_certificate_reaches_the_app_and_gets_a_401_problem(
    pki: PkiFiles, server: ServerThread
) -> None:
    with _client(pki, server) as client:
        assert client.get("/peek").json() == {"dn": None, "error": None}
        r = client.get("/whoami")
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM_JSON
    problem = r.json()
    assert problem["type"] == "AuthenticationRequired"
    assert problem["status"] == 401
    assert problem["instance"] == "/whoami"


@pytest.mark.parametrize("who", ["untrusted", "self_signed"])
def test_untrusted_clients_are_stopped_by_tls(
    pki: PkiFiles, server: ServerThread, who: str
) -> None:
    if who == "self_signed":
        kw: dict[str, Any] = {"cert": pki.self_signed.cert, "key": pki.self_signed.key}
    else:
        kw = {"proxy": pki.proxies[who]}
    CALLS.clear()
    with _client(pki, server, **kw) as client, pytest.raises(httpx.TransportError):
        client.get("/peek")
    assert CALLS == []  # the handshake failed: the app never ran


def test_identity_is_computed_once_per_connection(
    pki: PkiFiles, server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = run_module.identity_from_chain

    def counting(*args: Any, **kw: Any) -> Any:
        seen.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(run_module, "identity_from_chain", counting)
    with _client(pki, server, proxy=pki.proxies["voms"]) as client:
        for _ in range(3):
            assert client.get("/whoami").json()["fqans"] == list(VOMS_FQANS)
    assert len(seen) == 1
    with _client(pki, server, proxy=pki.proxies["plain"]) as client:
        assert client.get("/whoami").json()["fqans"] == []
    assert len(seen) == 2


def test_unknown_route_is_a_problem_too(pki: PkiFiles, server: ServerThread) -> None:
    with _client(pki, server, proxy=pki.proxies["plain"]) as client:
        r = client.get("/nowhere")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_JSON


def test_required_client_certificates_variant(pki: PkiFiles) -> None:
    ctx = server_ssl_context(pki.host.cert, pki.host.key, pki.ca_dir, require_client_cert=True)
    with ServerThread(make_app(), tls=pki.server_tls(), ssl_context=ctx) as srv:
        with _client(pki, srv, proxy=pki.proxies["voms"]) as client:
            assert client.get("/whoami").json()["fqans"] == list(VOMS_FQANS)
        with _client(pki, srv) as client, pytest.raises(httpx.TransportError):
            client.get("/peek")


def test_plain_http_server_authenticates_nobody() -> None:
    with running_server(make_app()) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        r = httpx.get(srv.url + "/whoami")
    assert r.status_code == 401


def test_stop_closes_the_port(pki: PkiFiles) -> None:
    with running_server(make_app(), tls=pki.server_tls()) as srv:
        port = srv.port
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass


def test_failed_startup_raises(pki: PkiFiles) -> None:
    @asynccontextmanager
    async def broken(app: Starlette) -> Any:
        raise RuntimeError("database unreachable")
        yield  # pragma: no cover

    app = Starlette(routes=[], lifespan=broken)
    with pytest.raises(RuntimeError, match="failed to start"):
        ServerThread(app, tls=pki.server_tls()).start()


def test_serve_forever_stops_gracefully_on_sigterm(pki: PkiFiles) -> None:
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from tests.integration.test_tls_server import make_app
        from mdm.servers import serve_forever
        from mdm.settings import TlsSettings
        tls = TlsSettings(cert=Path({str(pki.host.cert)!r}), key=Path({str(pki.host.key)!r}),
                          ca_dir=Path({str(pki.ca_dir)!r}), vomsdir=Path({str(pki.vomsdir)!r}))
        serve_forever(make_app(), tls=tls, on_ready=lambda url: print(url, flush=True))
        print("stopped", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        with httpx_client(ca_dir=pki.ca_dir, proxy=pki.proxies["voms"], base_url=url) as client:
            assert client.get("/whoami").json()["dn"] == ALICE_DN
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "stopped" in out
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def test_subject_hash_matches_openssl(pki: PkiFiles) -> None:
    openssl = require_tool("openssl")
    certs = [pki.ca.cert_path, pki.alice.cert, pki.host.cert, pki.self_signed.cert, pki.voms.cert]
    for path in certs:
        pem = path.read_bytes()
        expected = (
            subprocess.run(
                [openssl, "x509", "-hash", "-noout"], input=pem, capture_output=True, check=True
            )
            .stdout.decode()
            .strip()
        )
        cert = load_pem_certificates(pem)[0]
        assert subject_hash(cert.subject) == expected, path


def test_openssl_finds_our_ca_by_hash(pki: PkiFiles) -> None:
    openssl = require_tool("openssl")
    proxy = str(pki.proxies["plain_py"])
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-CApath",
            str(pki.ca_dir),
            "-allow_proxy_certs",
            "-untrusted",
            proxy,
            proxy,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_real_grid_client_presents_its_voms_proxy(pki: PkiFiles, server: ServerThread) -> None:
    # davix (the HTTP library under gfal2) with -P grid reads X509_USER_PROXY / X509_CERT_DIR.
    davix = require_tool("davix-get", package="davix")
    env = {
        "PATH": "/usr/bin:/bin",
        "X509_USER_PROXY": str(pki.proxies["voms"]),
        "X509_CERT_DIR": str(pki.ca_dir),
    }
    url = server.url.replace("127.0.0.1", "localhost") + "/whoami"
    result = subprocess.run(
        [davix, "-P", "grid", url], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["dn"] == ALICE_DN
    assert tuple(body["fqans"]) == VOMS_FQANS
