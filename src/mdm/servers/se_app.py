"""The storage element: a read-only WebDAV subset plus the WLCG Tape REST API, over a backend.

``create_app(backend, settings)`` returns the Starlette app ``mdm serve se`` runs with
``mdm.servers.run`` (mutual TLS, grid proxies, VOMS). Every answer follows what real gfal2
2.21.3 and davix 0.8.4 need (notes/grid-clients.md §2, docs/storage-element.md):

* ``PROPFIND`` Depth 0/1, body ignored (allprop). Every ``<propstat>`` carries its
  ``<d:status>`` (davix drops an entry without it), a collection lists itself first with
  ``<d:collection/>``, hrefs are percent-encoded, and a file's ``getcontentlength`` is its size
  (an estimate while NEARLINE, the exact served size once ONLINE). Depth infinity: 403.
* ``GET``/``HEAD`` of an ONLINE file: ``Content-Length`` from the open file itself, a single
  ``Range`` gives 206 (end clamped to the size), an unsatisfiable one 416, several ranges one
  206 ``multipart/byteranges`` body (``mdm.servers.byteranges``: coalesced, capped by
  ``storage.max_ranges``; a malformed or over-long header gets the whole file). ``Want-Digest``
  gets ``Digest: adler32=<8 hex>``, ``md5=<base64>``, ``sha-256=<base64>`` (RFC 3230/5843).
  A file that is not ONLINE: 503 + ``Retry-After`` + problem+json, no body bytes of the file.
* ``POST`` of a macaroon request (gfal2 sends one before almost everything): 400 problem+json,
  after which gfal2 carries on with X.509. Write methods (PUT, MKCOL, DELETE, MOVE, COPY): 405.
* Authorization: no verified identity -> 401; ``list`` for PROPFIND (children the caller may
  not list are left out), ``read`` for GET/HEAD and staging; otherwise 403. Access is checked
  before existence, so a refused caller cannot probe which LFNs exist.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import quote
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mdm._log import audit_logger
from mdm.acl import Identity
from mdm.errors import PermissionDenied, UsageError
from mdm.servers.byteranges import (
    Multipart,
    Span,
    Unsatisfiable,
    multipart_body,
    parse_ranges,
    span_body,
)
from mdm.servers.http import EXCEPTION_HANDLERS, PROBLEM_JSON, require_identity
from mdm.servers.se_tape import tape_routes
from mdm.settings import Settings
from mdm.storage.backend import Entry, FileState, Right, StorageBackend, normalize_lfn

READ_ONLY = "OPTIONS, GET, HEAD, PROPFIND"
_RESERVED = ("/api/", "/.well-known/")
_DIGESTS = {"adler32": "hex", "md5": "b64", "sha-256": "b64", "sha256": "hex"}


def _backend(request: Request) -> StorageBackend:
    backend: StorageBackend = request.app.state.backend
    return backend


async def _authorized(request: Request, right: Right) -> tuple[Identity, str]:
    who = require_identity(request)
    try:
        lfn = normalize_lfn("/" + request.path_params.get("path", ""))
    except UsageError as exc:
        raise HTTPException(400, exc.message) from exc
    if lfn.startswith(_RESERVED) or lfn in ("/api", "/.well-known"):
        raise HTTPException(405, "not a namespace path", headers={"Allow": "POST, GET"})
    if not await run_in_threadpool(_backend(request).authorize, who, lfn, right):
        raise PermissionDenied(f"{right} access to {lfn} is not granted", lfn=lfn)
    return who, lfn


# ---------------------------------------------------------------------- PROPFIND


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _etag(entry: Entry) -> str | None:
    """Size and archive time: stable across evictions and re-recalls (same bytes), cheap."""
    if entry.is_dir or entry.state is not FileState.ONLINE:
        return None
    return f'"{entry.size:x}-{int(entry.mtime * 1000):x}"'


def _href(entry: Entry) -> str:
    path = entry.lfn if not entry.is_dir or entry.lfn == "/" else entry.lfn + "/"
    return quote(path, safe="/")


def _response_xml(entry: Entry) -> str:
    when = datetime.fromtimestamp(entry.mtime, UTC)
    props = [
        f"<d:displayname>{escape(entry.name)}</d:displayname>",
        f"<d:getlastmodified>{_http_date(entry.mtime)}</d:getlastmodified>",
        f"<d:creationdate>{when.strftime('%Y-%m-%dT%H:%M:%SZ')}</d:creationdate>",
    ]
    if entry.is_dir:
        props.append("<d:resourcetype><d:collection/></d:resourcetype>")
    else:
        props.append("<d:resourcetype/>")
        props.append(f"<d:getcontentlength>{entry.size}</d:getcontentlength>")
        props.append("<d:getcontenttype>application/octet-stream</d:getcontenttype>")
        etag = _etag(entry)
        if etag:
            props.append(f"<d:getetag>{escape(etag)}</d:getetag>")
    return (
        f"<d:response><d:href>{escape(_href(entry))}</d:href><d:propstat><d:prop>"
        + "".join(props)
        + "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )


def multistatus(entries: list[Entry]) -> bytes:
    """A 207 body for *entries* (the collection itself first, as davix expects)."""
    body = "".join(_response_xml(e) for e in entries)
    return (
        '<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:">'
        + body
        + "</d:multistatus>"
    ).encode()


def _listing(backend: StorageBackend, who: Identity, lfn: str, depth: int) -> list[Entry]:
    entry = backend.stat(lfn)
    entries = [entry]
    if depth == 1 and entry.is_dir:
        children = backend.listdir(lfn)
        entries += [c for c in children if backend.authorize(who, c.lfn, Right.LIST)]
    return entries


async def propfind(request: Request) -> Response:
    who, lfn = await _authorized(request, Right.LIST)
    depth = request.headers.get("depth", "infinity").strip().lower()
    if depth not in ("0", "1"):  # RFC 4918 §9.1: a server may refuse Depth: infinity
        body = '<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:">'
        body += "<d:propfind-finite-depth/></d:error>"
        return Response(body, status_code=403, media_type="application/xml; charset=utf-8")
    entries = await run_in_threadpool(_listing, _backend(request), who, lfn, int(depth))
    return Response(
        multistatus(entries), status_code=207, media_type='application/xml; charset="utf-8"'
    )


# ---------------------------------------------------------------------- GET / HEAD


def want_digest(header: str | None, checksums: Mapping[str, str]) -> str | None:
    """The ``Digest`` value for a ``Want-Digest`` request (RFC 3230), best q first."""
    if not header or not checksums:
        return None
    wanted: list[tuple[float, int, str]] = []
    for i, item in enumerate(header.split(",")):
        name, _, params = item.strip().partition(";")
        q = 1.0
        m = re.search(r"q\s*=\s*([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        if q > 0 and name.strip().lower() in _DIGESTS:
            wanted.append((-q, i, name.strip().lower()))
    out = []
    for _q, _i, name in sorted(wanted):
        hexval = checksums.get("sha256" if name.startswith("sha") else name)
        if not hexval:
            continue
        if _DIGESTS[name] == "b64":
            out.append(f"{name}={base64.b64encode(bytes.fromhex(hexval)).decode()}")
        else:
            out.append(f"{name}={hexval}")
    return ", ".join(dict.fromkeys(out)) or None


async def get(request: Request) -> Response:
    who, lfn = await _authorized(request, Right.READ)
    backend = _backend(request)
    entry = await run_in_threadpool(backend.stat, lfn)
    if entry.is_dir:
        raise HTTPException(405, "a collection has no body: use PROPFIND", {"Allow": READ_ONLY})
    fh = await run_in_threadpool(backend.open_read, lfn)  # FileOffline (503) unless ONLINE
    try:
        size = await run_in_threadpool(_fstat_size, fh)
        headers = {"Accept-Ranges": "bytes", "Last-Modified": _http_date(entry.mtime)}
        etag = _etag(entry)
        if etag:
            headers["ETag"] = etag
        digest = want_digest(request.headers.get("want-digest"), entry.checksums)
        if digest:
            headers["Digest"] = digest
        spans = _requested_spans(request, size, etag, headers["Last-Modified"])
    except BaseException:
        fh.close()
        raise
    if request.method == "HEAD":
        fh.close()
        headers["Content-Length"] = str(size)
        return Response(b"", headers=headers, media_type="application/octet-stream")
    if spans is not None and len(spans) > 1:  # RFC 9110 §14.6; one span is never multipart
        multipart = Multipart.plan(spans, size)
        headers["Content-Length"] = str(multipart.content_length)
        audit_logger().info(
            "read %s bytes=%d status=206 parts=%d dn=%s",
            lfn,
            multipart.payload,
            len(spans),
            who.dn,
        )
        return StreamingResponse(
            multipart_body(fh, multipart),
            status_code=206,
            headers=headers,
            media_type=multipart.content_type,
        )
    status, span = (200, Span(0, size - 1)) if spans is None else (206, spans[0])
    if spans is not None:
        headers["Content-Range"] = span.content_range(size)
    headers["Content-Length"] = str(span.length)
    audit_logger().info("read %s bytes=%d status=%d dn=%s", lfn, span.length, status, who.dn)
    return StreamingResponse(
        span_body(fh, span),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


def _fstat_size(fh: BinaryIO) -> int:
    return os.fstat(fh.fileno()).st_size


def _requested_spans(
    request: Request, size: int, etag: str | None, last_modified: str
) -> list[Span] | None:
    """The spans to send (``None``: the whole file); 416 when none is satisfiable."""
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if header and if_range and if_range.strip() not in (etag, last_modified):
        return None  # the client's copy is stale: send the whole new representation
    try:
        return parse_ranges(header, size, request.app.state.storage_settings.max_ranges)
    except Unsatisfiable as exc:
        headers = {"Content-Range": f"bytes */{size}"}
        raise HTTPException(416, "range not satisfiable", headers) from exc


# ---------------------------------------------------------------------- the rest


async def post(request: Request) -> Response:
    """gfal2's macaroon request: refused cleanly (any non-200 makes it fall back to X.509)."""
    require_identity(request)
    if request.headers.get("content-type", "").startswith("application/macaroon-request"):
        raise UsageError(
            "this storage element issues no bearer tokens (macaroons); authenticate with X.509"
        )
    raise HTTPException(405, "POST is only for macaroon requests here", {"Allow": READ_ONLY})


async def options(request: Request) -> Response:
    return Response(headers={"Allow": READ_ONLY, "DAV": "1"})


async def dav(request: Request) -> Response:
    method = request.method
    if method in ("GET", "HEAD"):
        return await get(request)
    if method == "PROPFIND":
        return await propfind(request)
    if method == "POST":
        return await post(request)
    return await options(request)


class _CollapseSlashes:
    """Treat ``//`` in a request path as ``/`` (LFNs are sanitised so; gfal2 joins URLs)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "//" in scope.get("path", ""):
            scope["path"] = re.sub("/{2,}", "/", scope["path"])
        await self.app(scope, receive, send)


def create_app(backend: StorageBackend, settings: Settings | None = None) -> Starlette:
    """The storage-element app over *backend* (see the module docstring)."""
    settings = settings or Settings()
    routes = [
        *tape_routes(),
        Route("/{path:path}", dav, methods=["GET", "HEAD", "PROPFIND", "POST", "OPTIONS"]),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    app.state.backend = backend
    app.state.storage_settings = settings.storage
    app.add_middleware(_CollapseSlashes)
    return app


__all__ = ["PROBLEM_JSON", "create_app", "multistatus", "want_digest"]
