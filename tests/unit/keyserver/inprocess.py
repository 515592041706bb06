"""n key-server apps in this process, for unit tests of the server and of the client.

The TLS layer (``mdm.servers.run``) is replaced by a tiny ASGI wrapper that takes the caller's
identity from a test header: everything above it (the app, the service, SQLite, the audit
chain, the client's quorum logic) is the real code. Real mTLS is covered by the integration
tests with server processes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mdm.acl import SCOPE_KEY, Identity
from mdm.keyserver import KeyService, MasterKey, open_service
from mdm.keystore import KeyStore
from mdm.servers.keyserver_app import create_app
from mdm.settings import KeyStoreSettings, Settings

HEADER = "x-test-identity"
CREATOR_FQAN = "/mdm/Role=producer"
ADMIN_FQAN = "/mdm/Role=keyadmin"
ALICE = Identity("/DC=org/DC=mdm/CN=Alice", ("/mdm", "/mdm/Role=producer"))
BOB = Identity("/DC=org/DC=mdm/CN=Bob", ("/mdm", "/mdm/radiology"))
CAROL = Identity("/DC=org/DC=mdm/CN=Carol", ("/mdm",))
EVE = Identity("/DC=org/DC=evil/CN=Eve", ("/other",))
KEEPER = Identity("/DC=org/DC=mdm/CN=Keeper", ("/mdm", "/mdm/Role=keyadmin"))


class InjectIdentity:
    """Test-only stand-in for the TLS layer: identity from the ``x-test-identity`` header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(HEADER.encode())
            if raw:
                data = json.loads(raw)
                who = Identity(data["dn"], tuple(data.get("fqans", ())))
                scope["extensions"] = {**(scope.get("extensions") or {}), SCOPE_KEY: who}
        await self.app(scope, receive, send)


def headers_for(who: Identity | None) -> dict[str, str]:
    if who is None:
        return {}
    return {HEADER: json.dumps({"dn": who.dn, "fqans": list(who.fqans)})}


class SyncASGITransport(httpx.BaseTransport):
    """A sync httpx transport into an ASGI app, run on one background event loop.

    The key-store client is synchronous (it fans out with threads); ``httpx.ASGITransport``
    is async only, so requests are handed to a loop thread owned by the cluster.
    """

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def run() -> httpx.Response:
            req = httpx.Request(
                request.method, request.url, headers=request.headers, content=content
            )
            resp = await self._inner.handle_async_request(req)
            body = b"".join([chunk async for chunk in resp.stream])  # type: ignore[union-attr]
            return httpx.Response(resp.status_code, headers=resp.headers, content=body)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=60)


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused (server stopped by the test)", request=request)


def server_settings(tmp_path: Path, index: int, **overrides: Any) -> Settings:
    key = tmp_path / f"ks{index}" / "master.key"
    if not key.exists():
        MasterKey.create(key)
    values = {
        "index": index,
        "database_url": f"sqlite:///{tmp_path / f'ks{index}' / 'keys.db'}",
        "master_key_file": str(key),
        "admin_fqans": [ADMIN_FQAN],
        "creator_fqans": [CREATOR_FQAN],
        **overrides,
    }
    return Settings.from_mapping({"keyserver": values})


@dataclass
class Cluster:
    tmp_path: Path
    n: int
    services: list[KeyService] = field(default_factory=list)
    apps: list[Any] = field(default_factory=list)
    down: set[int] = field(default_factory=set)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    clients: list[httpx.Client] = field(default_factory=list)

    def start(self, database_urls: list[str] | None = None, **overrides: Any) -> Cluster:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        for i in range(1, self.n + 1):
            if database_urls:
                overrides["database_url"] = database_urls[i - 1]
            settings = server_settings(self.tmp_path, i, **overrides)
            svc = open_service(settings.keyserver)
            self.services.append(svc)
            self.apps.append(InjectIdentity(create_app(settings, service=svc)))
        return self

    def url(self, slot: int) -> str:
        return f"http://ks{slot}.test"

    def client(self, slot: int, who: Identity | None) -> httpx.Client:
        if slot in self.down:
            return httpx.Client(base_url=self.url(slot), transport=httpx.MockTransport(_refuse))
        client = httpx.Client(
            base_url=self.url(slot),
            transport=SyncASGITransport(self.apps[slot - 1], self.loop),
            headers=headers_for(who),
        )
        self.clients.append(client)
        return client

    def keystore(
        self, who: Identity | None, *, k: int = 3, write_quorum: int | None = None
    ) -> KeyStore:
        settings = KeyStoreSettings(
            servers=tuple(self.url(s) for s in range(1, self.n + 1)),
            threshold=k,
            write_quorum=write_quorum,
        )
        clients = [self.client(s, who) for s in range(1, self.n + 1)]
        return KeyStore(settings, clients=clients)

    def stop(self, slots: Iterable[int]) -> None:
        self.down |= set(slots)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
        for svc in self.services:
            svc.db.dispose()
