"""The key server's HTTP face: ``create_app(settings)`` -> Starlette app (protocol v1).

Everything a request does to a key happens in ``mdm.keyserver.KeyService`` (one transaction,
audited); this module only authenticates (the identity the TLS layer put in the scope), limits
(per-caller token bucket, body size), parses JSON and maps results and ``MDMError`` to HTTP
(problem+json). Wire format and semantics: docs/keyserver-protocol.md.

Refusals the app decides itself (no certificate, body too large, malformed JSON) are audited
like the service's own. Rate-limited requests are *not* written to the audit table, on purpose:
a flood must not turn into a flood of database writes; they are logged (rate-limited) instead.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
import uuid
from typing import Any, NoReturn

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mdm import __version__
from mdm.acl import Identity
from mdm.errors import (
    MDMError,
    RateLimited,
    UsageError,
)
from mdm.keyserver import KeyService, RequestInfo, ShareUpload, open_service
from mdm.keyserver.protocol import MAX_FETCH_KEYS, PROTOCOL, openapi_document
from mdm.servers.http import EXCEPTION_HANDLERS, identity, read_json_object, require_identity
from mdm.settings import Settings

log = logging.getLogger(__name__)
BATCH_ITEM_BYTES = 4096


class RateLimiter:
    """Token bucket per caller: *per_minute* requests, bursts up to the same number."""

    def __init__(self, per_minute: int, *, max_callers: int = 10000) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0.0 when allowed, else the seconds to wait before one request is allowed again."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if len(self._buckets) >= self.max_callers and caller not in self._buckets:
                self._buckets = {
                    c: (t, ts) for c, (t, ts) in self._buckets.items() if now - ts < 60.0
                }
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[caller] = (tokens - 1.0, now)
            return 0.0


class KeyServerApp:
    """Holds the service and limits; its methods are the route endpoints."""

    def __init__(self, service: KeyService, settings: Settings) -> None:
        self.service = service
        self.max_body = settings.keyserver.max_request_bytes
        # A batch registration carries up to max_register_keys uploads (under 1 KiB each for
        # n = 5; 4 KiB leaves room for large n and ACLs): its own body limit scales with it.
        self.max_batch = max(1, settings.keyserver.max_register_keys)
        self.max_batch_body = max(self.max_body, self.max_batch * BATCH_ITEM_BYTES)
        self.limiter = RateLimiter(settings.keyserver.rate_limit_per_minute)
        self._last_limit_log = 0.0

    # -- plumbing -----------------------------------------------------------------------------

    def _info(self, request: Request) -> RequestInfo:
        client = request.client.host if request.client else ""
        return RequestInfo(client=client, request_id=request.state.request_id)

    async def _refuse(self, request: Request, op: str, key_id: str, exc: MDMError) -> NoReturn:
        """Audit a refusal decided here (not in the service), then raise it."""
        who = identity(request)
        await run_in_threadpool(
            self.service.record_refusal, who, self._info(request), op, key_id, exc
        )
        raise exc

    async def _caller(self, request: Request, op: str, key_id: str = "") -> Identity:
        """The verified caller, within its rate; anonymous callers are limited per address
        *before* their refusal is audited, so they cannot flood the audit table."""
        try:
            who = require_identity(request)
        except MDMError as exc:
            client = request.client.host if request.client else "-"
            self._limit(f"ip:{client}", client, op)
            await self._refuse(request, op, key_id, exc)
        self._limit(f"dn:{who.dn}", who.dn, op)
        return who

    def _limit(self, bucket: str, who: str, op: str) -> None:
        wait = self.limiter.take(bucket)
        if wait > 0:
            now = time.monotonic()
            if now - self._last_limit_log > 10.0:
                self._last_limit_log = now
                log.warning("rate limit reached by %r on %s", who, op)
            raise RateLimited(
                "too many requests from this caller; slow down", retry_after=int(wait) + 1
            )

    async def _json(
        self, request: Request, op: str, key_id: str = "", *, limit: int | None = None
    ) -> dict[str, Any]:
        """The JSON object of the request (servers.http.read_json_object, capped at *limit* or
        ``keyserver.max_body``); a refusal is audited like every other one."""
        try:
            return await read_json_object(
                request, limit=limit or self.max_body, empty_is_object=True
            )
        except MDMError as exc:
            await self._refuse(request, op, key_id, exc)

    # -- endpoints ----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        await self._caller(request, "health")
        return JSONResponse(
            {
                "status": "ok",
                "slot": self.service.slot,
                "protocol": PROTOCOL,
                "version": __version__,
            }
        )

    async def openapi(self, request: Request) -> Response:
        await self._caller(request, "openapi")
        return JSONResponse(openapi_document())

    async def put_share(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        who = await self._caller(request, "register", key_id)
        data = await self._json(request, "register", key_id)
        try:
            up = _upload(data)
        except UsageError as exc:
            await self._refuse(request, "register", key_id, exc)
        view, created = await run_in_threadpool(
            self.service.register, who, self._info(request), key_id, up
        )
        return JSONResponse(view.to_json(), status_code=201 if created else 200)

    async def register_many(self, request: Request) -> Response:
        """``POST /v1/register``: many keys, one transaction; per-key results in order."""
        who = await self._caller(request, "register")
        data = await self._json(request, "register", limit=self.max_batch_body)
        keys = data.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
            await self._refuse(
                request, "register", "", UsageError("keys must list 1 or more share uploads")
            )
        if len(keys) > self.max_batch:
            await self._refuse(
                request,
                "register",
                "",
                UsageError(f"a batch registers at most {self.max_batch} keys, got {len(keys)}"),
            )
        items: list[tuple[str, ShareUpload | UsageError]] = []
        for item in keys:
            key_id = item.get("key_id")
            try:
                if not isinstance(key_id, str):
                    raise UsageError("every batch item needs a key_id (string)")
                items.append((key_id, _upload(item)))
            except UsageError as exc:
                items.append((key_id if isinstance(key_id, str) else "", exc))
        results = await run_in_threadpool(
            self.service.register_many, who, self._info(request), items
        )
        out: list[dict[str, Any]] = []
        for (key_id, _), res in zip(items, results, strict=True):
            if isinstance(res, MDMError):
                out.append({"key_id": key_id, "ok": False, "error": res.to_problem()})
            else:
                view, created = res
                out.append({"ok": True, "created": created, **view.to_json()})
        return JSONResponse({"results": out})

    async def get_share(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        who = await self._caller(request, "fetch", key_id)
        view = await run_in_threadpool(self.service.fetch, who, self._info(request), key_id)
        return JSONResponse(view.to_json(), headers={"Cache-Control": "no-store"})

    async def fetch_many(self, request: Request) -> Response:
        who = await self._caller(request, "fetch")
        data = await self._json(request, "fetch")
        ids = data.get("key_ids")
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= MAX_FETCH_KEYS
            or not all(isinstance(i, str) for i in ids)
        ):
            await self._refuse(
                request, "fetch", "", UsageError(f"key_ids must list 1..{MAX_FETCH_KEYS} key ids")
            )
        results = await run_in_threadpool(self.service.fetch_many, who, self._info(request), ids)
        out = []
        for key_id, res in zip(ids, results, strict=True):
            if isinstance(res, MDMError):
                out.append({"key_id": key_id, "ok": False, "error": res.to_problem()})
            else:
                out.append({"ok": True, **res.to_json()})
        return JSONResponse({"results": out}, headers={"Cache-Control": "no-store"})

    async def get_meta(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        who = await self._caller(request, "meta", key_id)
        view = await run_in_threadpool(self.service.meta, who, self._info(request), key_id)
        return JSONResponse(view.to_json())

    async def get_acl(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        who = await self._caller(request, "meta", key_id)
        view = await run_in_threadpool(self.service.meta, who, self._info(request), key_id)
        acl = view.acl.to_json()
        headers = {"ETag": f'"{acl["version"]}:{acl["digest"]}"'}
        return JSONResponse({"key_id": key_id, "owner": view.owner, "acl": acl}, headers=headers)

    async def put_acl(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        who = await self._caller(request, "set_acl", key_id)
        data = await self._json(request, "set_acl", key_id)
        try:
            base, acl = data["if_match"], data["acl"]
            kwargs = {
                "if_version": int(base["version"]),
                "if_digest": str(base["digest"]),
                "version": int(acl["version"]),
                "prev": str(acl["prev"]),
                "entries": acl["entries"],
            }
        except (KeyError, TypeError, ValueError):
            await self._refuse(
                request,
                "set_acl",
                key_id,
                UsageError(
                    "body must be {if_match: {version, digest}, acl: {version, prev, entries}}"
                ),
            )
        doc = await run_in_threadpool(
            lambda: self.service.put_acl(who, self._info(request), key_id, **kwargs)
        )
        return JSONResponse({"key_id": key_id, "acl": doc.to_json()})

    async def delete_key(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        rollback = request.query_params.get("rollback") in ("1", "true")
        who = await self._caller(request, "delete", key_id)
        await run_in_threadpool(
            lambda: self.service.delete(who, self._info(request), key_id, rollback=rollback)
        )
        return Response(status_code=204)

    async def list_keys(self, request: Request) -> Response:
        who = await self._caller(request, "list")
        after = request.query_params.get("after", "")
        try:
            limit = int(request.query_params.get("limit", "500"))
        except ValueError:
            limit = 500
        keys = await run_in_threadpool(
            lambda: self.service.list_keys(who, self._info(request), after=after, limit=limit)
        )
        return JSONResponse({"keys": keys, "next": keys[-1]["key_id"] if keys else None})


def _upload(data: dict[str, Any]) -> ShareUpload:
    try:
        acl = data.get("acl") or {}
        return ShareUpload(
            slot=int(data["slot"]),
            share=base64.b64decode(str(data["share"]), validate=True),
            share_hashes=tuple(str(h) for h in data["share_hashes"]),
            k=int(data["k"]),
            n=int(data["n"]),
            kcv=str(data["kcv"]),
            entries=acl.get("entries") or {},
            repair=bool(data.get("repair", False)),
            owner=str(data.get("owner") or ""),
            acl_version=int(acl.get("version", 1)),
            acl_prev=str(acl.get("prev", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise UsageError(
            "share body needs slot, share (base64), share_hashes, k, n, kcv[, acl]"
        ) from exc


class RequestIdMiddleware:
    """Gives each request an id (``request.state.request_id``, ``X-Request-ID``) for the audit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings, *, service: KeyService | None = None) -> Starlette:
    """The ASGI app of key server ``settings.keyserver.index`` (no sockets opened here)."""
    svc = service or open_service(settings.keyserver)
    ks = KeyServerApp(svc, settings)
    key = "/v1/keys/{key_id}"
    routes = [
        Route("/v1/health", ks.health, methods=["GET"]),
        Route("/openapi.json", ks.openapi, methods=["GET"]),
        Route("/v1/keys", ks.list_keys, methods=["GET"]),
        Route("/v1/fetch", ks.fetch_many, methods=["POST"]),
        Route("/v1/register", ks.register_many, methods=["POST"]),
        Route(key + "/share", ks.put_share, methods=["PUT"]),
        Route(key + "/share", ks.get_share, methods=["GET"]),
        Route(key + "/meta", ks.get_meta, methods=["GET"]),
        Route(key + "/acl", ks.get_acl, methods=["GET"]),
        Route(key + "/acl", ks.put_acl, methods=["PUT"]),
        Route(key, ks.delete_key, methods=["DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(RequestIdMiddleware)],
    )
    app.state.keyserver = ks
    return app


__all__ = ["KeyServerApp", "RateLimiter", "RequestIdMiddleware", "create_app"]
