"""mdm.servers.http in-process: MDMError -> problem+json, identity from the scope, audit."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mdm.acl import SCOPE_KEY, Identity
from mdm.errors import FileOffline, KeyNotFound, PermissionDenied
from mdm.servers.http import (
    CREDENTIAL_ERROR_KEY,
    EXCEPTION_HANDLERS,
    PROBLEM_JSON,
    require_identity,
)

ALICE = Identity(dn="/DC=org/CN=Alice", fqans=("/mdm",))


async def secret(request: Request) -> JSONResponse:
    who = require_identity(request)
    if "/mdm" not in who.fqans:
        raise PermissionDenied("not in /mdm", key_id="k1")
    return JSONResponse({"dn": who.dn})


async def missing(request: Request) -> JSONResponse:
    raise KeyNotFound("no such key", key_id="k9")


async def offline(request: Request) -> JSONResponse:
    raise FileOffline("stage it first", retry_after=30)


async def crash(request: Request) -> JSONResponse:
    raise ValueError("internal detail that must not leak")


def _app(extensions: dict[str, object]) -> Starlette:
    inner = Starlette(
        routes=[
            Route("/secret", secret),
            Route("/missing", missing),
            Route("/offline", offline),
            Route("/crash", crash),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        # What mdm.servers.run does per TLS connection.
        if scope["type"] == "http":
            scope["extensions"] = {**scope.get("extensions", {}), **extensions}
        await inner(scope, receive, send)

    return app  # type: ignore[return-value]


def _get(extensions: dict[str, object], path: str) -> httpx.Response:
    """One request through httpx's ASGI transport (no sockets, no lifespan)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(extensions), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://mdm.test") as c:
            return await c.get(path)

    return asyncio.run(go())


def test_identity_in_scope_reaches_the_handler() -> None:
    assert _get({SCOPE_KEY: ALICE}, "/secret").json() == {"dn": ALICE.dn}


def test_no_identity_is_401_problem_json_and_audited(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mdm.audit"):
        r = _get({}, "/secret")
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["type"] == "AuthenticationRequired"
    assert any("denied GET /secret status=401" in rec.getMessage() for rec in caplog.records)


def test_refused_chain_is_403_with_the_reason() -> None:
    r = _get({CREDENTIAL_ERROR_KEY: "untrusted issuer"}, "/secret")
    assert r.status_code == 403
    assert r.json()["type"] == "CredentialError"
    assert "untrusted issuer" in r.json()["detail"]


def test_permission_denied_names_the_caller_in_the_audit(caplog: pytest.LogCaptureFixture) -> None:
    bob = Identity(dn="/DC=org/CN=Bob")
    with caplog.at_level(logging.WARNING, logger="mdm.audit"):
        r = _get({SCOPE_KEY: bob}, "/secret")
    assert r.status_code == 403
    assert r.json()["context"] == {"key_id": "k1"}
    assert any("dn=/DC=org/CN=Bob" in rec.getMessage() for rec in caplog.records)


def test_mdm_errors_keep_their_status_and_context() -> None:
    r = _get({SCOPE_KEY: ALICE}, "/missing")
    assert (r.status_code, r.json()["type"]) == (404, "KeyNotFound")
    assert r.json()["instance"] == "/missing"
    r = _get({SCOPE_KEY: ALICE}, "/offline")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "30"


def test_unexpected_errors_are_a_bare_500() -> None:
    r = _get({}, "/crash")
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_JSON
    assert "internal detail" not in r.text
