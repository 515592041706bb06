"""The n key servers as the client sees them: one keep-alive HTTPS client per slot.

Each slot's client is an ``httpx.Client`` (mutual TLS with the caller's certificate or proxy in
production; any transport in tests). A call either returns the JSON body or raises the
``MDMError`` the server sent (rebuilt from problem+json by class name), or ``TransportError``
when the server could not be reached. ``classify`` turns that into the one word the user sees
for each server: down, denied, missing, corrupt, conflict or error.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from mdm.errors import (
    AuthError,
    ConfigError,
    Conflict,
    IntegrityError,
    KeyNotFound,
    MDMError,
    RateLimited,
    TransportError,
    from_problem,
)
from mdm.settings import KeyStoreSettings, TlsSettings


@dataclass(frozen=True)
class ServerProblem:
    """Why one server did not contribute: ``reason`` is down/denied/missing/corrupt/..."""

    slot: int
    url: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"server {self.slot} ({self.url}): {self.reason} ({self.detail})"


def classify(exc: MDMError) -> str:
    if isinstance(exc, TransportError):
        return "down"
    if isinstance(exc, AuthError):
        return "denied"
    if isinstance(exc, KeyNotFound):
        return "missing"
    if isinstance(exc, IntegrityError):
        return "corrupt"
    if isinstance(exc, Conflict):
        return "conflict"
    if isinstance(exc, RateLimited):
        return "rate-limited"
    return "error"


class Servers:
    """Slot i (1-based) is ``urls[i-1]``; ``call`` talks to one server."""

    def __init__(
        self,
        settings: KeyStoreSettings,
        *,
        tls: TlsSettings | None = None,
        clients: Sequence[httpx.Client] | None = None,
    ) -> None:
        self.urls = tuple(u.rstrip("/") for u in settings.servers)
        if not self.urls:
            raise ConfigError("keystore.servers lists no key server", key="keystore.servers")
        if clients is not None:
            if len(clients) != len(self.urls):
                raise ConfigError("one HTTP client per key server is needed")
            self.clients = list(clients)
            self._owned = False
        else:
            timeout = httpx.Timeout(settings.timeout)
            verify: ssl.SSLContext | bool = True
            if tls is not None and tls.ca_dir is not None:
                # Mutual TLS as the caller: tls.proxy (or cert/key), servers checked by ca_dir.
                from mdm.pki.tls import client_ssl_context

                verify = client_ssl_context(tls)
            self.clients = [
                httpx.Client(base_url=u, verify=verify, timeout=timeout) for u in self.urls
            ]
            self._owned = True

    @property
    def n(self) -> int:
        return len(self.urls)

    def url(self, slot: int) -> str:
        return self.urls[slot - 1]

    def call(
        self, slot: int, method: str, path: str, *, json: Any = None, params: Any = None
    ) -> Any:
        """JSON body of a 2xx answer (``None`` for 204); raise the mapped error otherwise."""
        client = self.clients[slot - 1]
        try:
            resp = client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"key server {slot} unreachable: {type(exc).__name__}", slot=slot
            ) from exc
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.is_success:
            return body
        if isinstance(body, dict):
            raise from_problem(body, resp.status_code)
        raise TransportError(f"key server {slot} answered HTTP {resp.status_code}", slot=slot)

    def problem(self, slot: int, exc: MDMError) -> ServerProblem:
        return ServerProblem(slot, self.url(slot), classify(exc), f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._owned:
            for c in self.clients:
                c.close()
