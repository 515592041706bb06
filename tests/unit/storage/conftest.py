"""A small nearline archive, the disk backend over it, and the SE app in process.

The TLS layer is replaced by a tiny ASGI wrapper that takes the caller from a test header
(``x-test-identity``); everything above it (the app, the backend, the disk copies) is the real
code. Real mTLS with real gfal2/davix clients is in tests/integration/test_se_*.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mdm.acl import SCOPE_KEY, Identity
from mdm.servers.se_app import create_app
from mdm.settings import Settings
from mdm.storage import Grants, PosixNearline

HEADER = "x-test-identity"
STUDY = "/dicom/2.25.1"
SERIES = f"{STUDY}/2.25.11"
BIG = f"{SERIES}/2.25.111"  # 70 000 random bytes
SMALL = f"{SERIES}/2.25.112"  # 1 000 bytes
CLOSED = "/dicom/2.25.9/2.25.99/2.25.999"  # a study only Alice may list, nobody may read

ALICE = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor", ("/mdm", "/mdm/radiology"))
CAROL = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Carol Doctor", ("/mdm/radiology",))
BOB = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Bob Nurse", ("/mdm",))  # list, no read
EVE = Identity("/DC=org/DC=evil/CN=Eve", ("/other",))  # nothing

GRANTS = {
    "/dicom": {"list": ["fqan:/mdm"], "read": ["fqan:/mdm/radiology"]},
    "/dicom/2.25.9": {"list": [f"dn:{ALICE.dn}"], "read": []},
}


@dataclass
class Archive:
    root: Path
    cache: Path
    data: dict[str, bytes]


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    root = tmp_path / "archive"
    data = {BIG: os.urandom(70000), SMALL: os.urandom(1000), CLOSED: b"closed study"}
    for lfn, content in data.items():
        path = root / lfn.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return Archive(root, tmp_path / "cache", data)


@pytest.fixture
def store(archive: Archive) -> Iterator[PosixNearline]:
    backend = PosixNearline(
        archive.root, archive.cache, Grants.from_mapping(GRANTS), pin_lifetime=600, retry_after=7
    )
    yield backend
    backend.stop()


class InjectIdentity:
    """Test-only stand-in for the TLS layer: the caller comes from the ``x-test-identity``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(HEADER.encode())
            if raw:
                data = json.loads(raw)
                who = Identity(data["dn"], tuple(data["fqans"]))
                scope["extensions"] = {**(scope.get("extensions") or {}), SCOPE_KEY: who}
        await self.app(scope, receive, send)


def as_(who: Identity | None) -> dict[str, str]:
    """Request headers making the in-process app see *who* (none: anonymous)."""
    return {HEADER: json.dumps({"dn": who.dn, "fqans": list(who.fqans)})} if who else {}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(store: PosixNearline) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_mapping({"storage": {"name": "mdm-unit"}})
    app = InjectIdentity(create_app(store, settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://se.test") as c:
        yield c
