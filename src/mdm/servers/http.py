"""What every MDM Starlette app shares: who is calling, and errors as problem+json.

Servers never build error bodies by hand. They raise an ``mdm.errors.MDMError`` subclass and the
handlers here answer with its ``http_status`` and ``to_problem()`` body (RFC 9457,
``application/problem+json``); the client rebuilds the same class from ``type``. Anything that is
not an ``MDMError`` becomes a bare 500 without detail (the traceback goes to the log, never to the
caller). Refusals (401/403) also write one record to the ``mdm.audit`` logger, so a denied access
leaves a trace even when the app forgot to audit it.

Request bodies are read through ``read_body`` / ``read_json`` / ``read_json_object``, each caller
passing its own size limit: the cap holds while streaming (a chunked or lying client cannot make
the server buffer more than the limit), and malformed JSON is a 400 naming what is wrong, never a
500 from deep inside a handler.

The caller's identity is put into the ASGI scope by the TLS layer (``mdm.servers.run``), once per
connection, after the certificate chain was verified::

    from starlette.applications import Starlette
    from mdm.servers.http import EXCEPTION_HANDLERS, require_identity

    async def whoami(request):
        who = require_identity(request)          # AuthenticationRequired (401) if none
        return JSONResponse({"dn": who.dn, "fqans": list(who.fqans)})

    app = Starlette(routes=[Route("/whoami", whoami)], exception_handlers=EXCEPTION_HANDLERS)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mdm._log import audit_logger
from mdm.acl import SCOPE_KEY, Identity
from mdm.errors import (
    AuthenticationRequired,
    AuthError,
    CredentialError,
    FileOffline,
    MDMError,
    RequestTooLarge,
    UsageError,
)

logger = logging.getLogger(__name__)

#: RFC 9457 media type of every MDM error body.
PROBLEM_JSON = "application/problem+json"

#: Scope extension key holding the reason a presented (TLS-verified) chain was refused by
#: ``mdm.pki.tls.identity_from_chain``; absent when no certificate was presented or it was fine.
CREDENTIAL_ERROR_KEY = "mdm.credential_error"


class ProblemResponse(JSONResponse):
    """A JSON response with the ``application/problem+json`` media type."""

    media_type = PROBLEM_JSON


def problem_response(exc: MDMError, *, instance: str | None = None) -> ProblemResponse:
    """The response for *exc*: its ``http_status`` and ``to_problem()`` body.

    ``instance`` (the request path) is added as RFC 9457 ``instance`` when given.
    """
    body = exc.to_problem()
    if instance:
        body["instance"] = instance
    headers = (
        {"Retry-After": str(exc.context["retry_after"])} if "retry_after" in exc.context else None
    )
    return ProblemResponse(body, status_code=exc.http_status, headers=headers)


def identity(request: Request) -> Identity | None:
    """The verified caller of *request*, or ``None`` when no usable certificate was presented.

    The value was computed once per TLS connection by ``mdm.servers.run`` from the verified
    chain: end-entity DN (proxies stripped) and only *verified* VOMS FQANs.
    """
    ext: Mapping[str, Any] = request.scope.get("extensions") or {}
    who = ext.get(SCOPE_KEY)
    return who if isinstance(who, Identity) else None


def credential_error(request: Request) -> str | None:
    """Why the certificate chain of this connection was refused (``None`` if it was not)."""
    ext: Mapping[str, Any] = request.scope.get("extensions") or {}
    reason = ext.get(CREDENTIAL_ERROR_KEY)
    return str(reason) if reason else None


def require_identity(request: Request) -> Identity:
    """The verified caller, or raise: ``CredentialError`` (403) when the chain was refused,
    ``AuthenticationRequired`` (401) when no client certificate was presented at all."""
    who = identity(request)
    if who is not None:
        return who
    reason = credential_error(request)
    if reason:
        raise CredentialError(f"client certificate refused: {reason}", reason=reason)
    raise AuthenticationRequired("this request needs a client certificate (X.509 or proxy)")


async def mdm_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler: ``MDMError`` -> problem+json with the class's status."""
    if not isinstance(exc, MDMError):  # pragma: no cover - registered for MDMError only
        raise exc
    if isinstance(exc, AuthError):
        who = identity(request)
        audit_logger().warning(
            "denied %s %s status=%d error=%s dn=%s",
            request.method,
            request.url.path,
            exc.http_status,
            type(exc).__name__,
            who.dn if who else "-",
        )
    elif isinstance(exc, FileOffline):
        # A NEARLINE file refused with 503 + Retry-After is the normal tape-like answer, not a
        # server fault: keep it out of WARNING so routine polling does not flood the log.
        logger.debug("%s %s -> %d offline", request.method, request.url.path, exc.http_status)
    elif exc.http_status >= 500:
        logger.warning("%s %s -> %d %s", request.method, request.url.path, exc.http_status, exc)
    return problem_response(exc, instance=request.url.path)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own ``HTTPException`` (unknown route, wrong method) as problem+json too."""
    if not isinstance(exc, HTTPException):  # pragma: no cover
        raise exc
    body = {"type": "about:blank", "title": exc.detail, "status": exc.status_code}
    body["instance"] = request.url.path
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return ProblemResponse(body, status_code=exc.status_code, headers=exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Any other exception: a 500 that says nothing about internals (logged with traceback)."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {
        "type": "InternalError",
        "title": "InternalError",
        "status": 500,
        "detail": "internal server error",
    }
    return ProblemResponse(body, status_code=500)


async def read_body(request: Request, *, limit: int) -> bytes:
    """The raw request body; ``RequestTooLarge`` (413) as soon as it is over *limit* bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read. The cap
    also holds while streaming, because a chunked body declares no length and a client may
    declare less than it sends: the server never buffers more than *limit* bytes.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise UsageError("the Content-Length header is not a byte count", header=declared[:40])
        if int(declared) > limit:
            raise RequestTooLarge(f"request body over {limit} bytes", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLarge(f"request body over {limit} bytes", limit=limit)
    return bytes(body)


def _finite(text: str) -> float:
    """``parse_float`` hook: ``1e999`` would parse as infinity, which no field can take."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    """``parse_constant`` hook: ``NaN`` and ``Infinity`` are Python's extensions, not JSON."""
    raise ValueError(f"{name} is not a JSON value")


_REQUIRED: Any = object()


def json_kind(value: Any) -> str:
    """The JSON name of *value*'s type, for error messages that do not echo the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


async def read_json(request: Request, *, limit: int, empty: Any = _REQUIRED) -> Any:
    """The request's JSON document (strict RFC 8259), read under *limit* bytes.

    An empty body gives *empty* when one is given, else it is refused. ``NaN``, ``Infinity``
    and numbers too large for a float are refused too: such values would only fail later, as a
    500, when they reach a lease, a size or a database column.
    """
    raw = await read_body(request, limit=limit)
    if not raw.strip():
        if empty is _REQUIRED:
            raise UsageError("the request body is empty: a JSON document is required")
        return empty
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError as exc:
        raise UsageError("the request body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the hooks above
        raise UsageError(f"the request body is not valid JSON: {exc}") from exc


async def read_json_object(
    request: Request, *, limit: int, empty_is_object: bool = False
) -> dict[str, Any]:
    """``read_json`` for endpoints that take a JSON object (``{}`` for an empty body if asked)."""
    data = await read_json(request, limit=limit, empty={} if empty_is_object else _REQUIRED)
    if not isinstance(data, dict):
        raise UsageError(f"the request body must be a JSON object, not {json_kind(data)}")
    return data


#: Pass as ``Starlette(exception_handlers=EXCEPTION_HANDLERS)``.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    MDMError: mdm_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}
