"""What every catalog endpoint shares: the caller, one short transaction, and request parsing.

The catalog routes (``catalog_files``, ``catalog_qido``, ``catalog_acl``, ``catalog_vault``,
``catalog_staging``) all follow one pattern: authenticate first (401/403 before any parsing),
turn the verified ``Identity`` into a ``catalog.Caller``, then call exactly one catalog function
in one short transaction run in a worker thread, so the event loop never waits on the database.
That pattern lives here once, as ``endpoint`` and the ``CatalogService`` transaction helpers;
so do the body and query-parameter checks, so that every route refuses bad input with the same
``UsageError`` (400) wording.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mdm.acl import Identity
from mdm.catalog.access import Caller
from mdm.catalog.db import CatalogDatabases
from mdm.errors import PermissionDenied, UsageError
from mdm.servers.http import json_kind, read_json_object, require_identity
from mdm.settings import CatalogSettings

#: Largest JSON request body; a batch registration of 1000 instances fits well inside.
MAX_BODY = 4 * 1024 * 1024

#: Largest id, count or offset a request may carry: a signed 64-bit column's maximum.
MAX_ID = 2**63 - 1

_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")

T = TypeVar("T")


class CatalogService:
    """What the endpoints share: the databases and how to turn an identity into a Caller.

    One instance lives in ``app.state.catalog``; the admin and service ACL entries are built once
    from the settings instead of on every request.
    """

    def __init__(self, settings: CatalogSettings, databases: CatalogDatabases) -> None:
        self.settings = settings
        self.dbs = databases
        self._admins = [f"dn:{d}" for d in settings.admin_dns] + [
            f"fqan:{f}" for f in settings.admin_fqans
        ]
        self._services = [f"dn:{d}" for d in settings.service_dns] + [
            f"fqan:{f}" for f in settings.service_fqans
        ]

    def caller(self, who: Identity) -> Caller:
        return Caller.of(who, admin_entries=self._admins, service_entries=self._services)

    @contextlib.contextmanager
    def sessions(
        self, *, catalog_write: bool, vault_write: bool
    ) -> Iterator[tuple[Session, Session]]:
        """Catalog and vault sessions; one session when both live in the same database."""
        if not self.dbs.separate_vault:
            with self.dbs.catalog.session(write=catalog_write or vault_write) as s:
                yield s, s
            return
        with (
            self.dbs.catalog.session(write=catalog_write) as cs,
            self.dbs.vault.session(write=vault_write) as vs,
        ):
            yield cs, vs

    async def read(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` in one read-only catalog transaction, in a worker thread."""
        return await run_in_threadpool(self._in_catalog, fn, False)

    async def write(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` in one catalog write transaction (committed if *fn* returns)."""
        return await run_in_threadpool(self._in_catalog, fn, True)

    async def with_vault(
        self, fn: Callable[[Session, Session], T], *, catalog_write: bool, vault_write: bool
    ) -> T:
        """``fn(catalog_session, vault_session)`` in a worker thread (see ``sessions``)."""
        return await run_in_threadpool(self._in_both, fn, catalog_write, vault_write)

    def _in_catalog(self, fn: Callable[[Session], T], write: bool) -> T:
        with self.dbs.catalog.session(write=write) as s:
            return fn(s)

    def _in_both(
        self, fn: Callable[[Session, Session], T], catalog_write: bool, vault_write: bool
    ) -> T:
        with self.sessions(catalog_write=catalog_write, vault_write=vault_write) as (cs, vs):
            return fn(cs, vs)


Handler = Callable[[Request, CatalogService, Caller], Awaitable[Response]]

#: (method, path, summary, right) of one route, for the OpenAPI document; each route module keeps
#: its own list next to its routes so that a new route and its description change together.
RouteDoc = tuple[str, str, str, str]


def endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate (401/403 before anything else), then call *fn* with the caller."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        service: CatalogService = request.app.state.catalog
        caller = service.caller(require_identity(request))
        return await fn(request, service, caller)

    return wrapper


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` when empty); 413 over ``MAX_BODY``, 400 if not JSON."""
    return await read_json_object(request, limit=MAX_BODY, empty_is_object=True)


def query_param(request: Request, name: str) -> str:
    """A required, non-empty query parameter."""
    value = request.query_params.get(name)
    if not value:
        raise UsageError(f"query parameter {name!r} is required")
    return value


def as_int(
    value: Any,
    name: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int = MAX_ID,
) -> int:
    """*value* (a JSON integer, or digits from a query string or path) as an int in range.

    *default* when absent (required when there is none). Booleans and fractions are refused
    rather than truncated, and the range keeps values a database column can hold: a count or
    id past 64 bits would otherwise fail inside the driver, as a 500.
    """
    if value is None:
        if default is None:
            raise UsageError(f"{name} is required", field=name)
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        number = int(value)
    else:
        shown = repr(value[:40]) if isinstance(value, str) else json_kind(value)
        raise UsageError(f"{name} must be an integer, not {shown}", field=name)
    if not minimum <= number <= maximum:
        raise UsageError(f"{name} must be between {minimum} and {maximum}", field=name)
    return number


def text_field(body: dict[str, Any], name: str, *, max_length: int | None = None) -> str:
    """A required, non-empty string member of a JSON body (at most *max_length* characters)."""
    value = body.get(name)
    if value is None or value == "":
        raise UsageError(f"{name!r} is required", field=name)
    if not isinstance(value, str):
        raise UsageError(f"{name!r} must be a string, not {json_kind(value)}", field=name)
    if max_length is not None and len(value) > max_length:
        raise UsageError(f"{name!r} is over {max_length} characters", field=name)
    return value


def identity_of(data: Any) -> Identity:
    """An ``Identity`` named in a request body (``{"dn": ..., "fqans": [...]}``)."""
    fqans = (data.get("fqans") or []) if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("dn"), str)
        or not data["dn"]
        or not isinstance(fqans, list)
        or not all(isinstance(f, str) for f in fqans)
    ):
        raise UsageError("'identity' must be an object with 'dn' (and optional 'fqans')")
    return Identity(dn=data["dn"], fqans=tuple(fqans))


def acting(svc: CatalogService, caller: Caller, body: dict[str, Any]) -> Caller:
    """Services (the storage element) may act for the user they authenticated.

    The storage element is the one holding the user's TLS connection; it passes the identity it
    verified as ``on_behalf_of`` so the catalog decides with the user's rights, not its own.
    """
    if body.get("on_behalf_of") is None:
        return caller
    if not (caller.service or caller.admin):
        raise PermissionDenied("only service identities may act on behalf of another identity")
    return svc.caller(identity_of(body["on_behalf_of"]))


__all__ = [
    "MAX_BODY",
    "MAX_ID",
    "CatalogService",
    "Handler",
    "RouteDoc",
    "acting",
    "as_int",
    "endpoint",
    "identity_of",
    "json_body",
    "query_param",
    "text_field",
]
