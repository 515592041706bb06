"""Shared fixtures and builders of the catalog tests (unit on SQLite, integration on both engines).

The fixtures are module-scoped: one database per test module (a fresh PostgreSQL database via
``new_database`` in the integration suite), seeded once with a small corpus that the QIDO tests
only read. Tests that write use their own UIDs, and staging tests empty the queue first.
Modules import the fixtures they use from here; ``catalog_url`` is defined by each module (or
conftest) so that the same tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from mdm.acl import SCOPE_KEY, Identity
from mdm.catalog import access
from mdm.catalog.access import Caller
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.migrations import upgrade
from mdm.catalog.models import StageFile, StageRequest
from mdm.catalog.registration import Registration, register

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.11"

ADMIN = Identity("/DC=org/DC=mdmtest/CN=Catalog Admin")
SERVICE = Identity("/DC=org/DC=mdmtest/CN=recall.localhost")
ALICE = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor")  # list on S1 by DN
BOB = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Bob Nurse", ("/mdm/radiology/Role=physician",))
CAROL = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Carol Steward")  # identity on S1
SAM = Identity("/DC=org/DC=mdmtest/O=Lab/CN=Sam Series")  # list on one series of S2 only
EVE = Identity("/DC=org/DC=mdmtest/O=Elsewhere/CN=Eve", ("/othervo",))

ADMIN_ENTRIES = [f"dn:{ADMIN.dn}"]
SERVICE_ENTRIES = [f"dn:{SERVICE.dn}"]


def caller(who: Identity) -> Caller:
    return Caller.of(who, admin_entries=ADMIN_ENTRIES, service_entries=SERVICE_ENTRIES)


def el(vr: str, *values: Any) -> dict[str, Any]:
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": v} for v in values]}
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def dataset(
    study: str,
    series: str,
    sop: str,
    *,
    patient: str = "PSN-001",
    name: str = "Doe^Jane",
    date: str = "20200115",
    time: str = "101500",
    accession: str = "A100",
    description: str = "Brain MRI",
    modality: str = "MR",
    series_number: int = 1,
    instance_number: int = 1,
    sop_class: str = MR,
    **extra: dict[str, Any],
) -> dict[str, Any]:
    """A de-identified header in DICOM JSON (pseudonymous UIDs and PatientID)."""
    ds = {
        "00080016": el("UI", sop_class),
        "00080018": el("UI", sop),
        "00080020": el("DA", date),
        "00080030": el("TM", time),
        "00080050": el("SH", accession),
        "00080060": el("CS", modality),
        "00081030": el("LO", description),
        "0008103E": el("LO", f"{modality} series {series_number}"),
        "00100010": el("PN", name),
        "00100020": el("LO", patient),
        "00100040": el("CS", "F"),
        "00180015": el("CS", "HEAD"),
        "00180050": el("DS", "1.5"),
        "0020000D": el("UI", study),
        "0020000E": el("UI", series),
        "00200011": el("IS", series_number),
        "00200013": el("IS", instance_number),
        "00200032": el("DS", 0, 0, instance_number),
        "00280010": el("US", 256),
        "00280011": el("US", 256),
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://nowhere/pixels"},
    }
    ds.update(extra)
    return ds


def original(study: str, series: str, sop: str, patient: str = "HOSP-42") -> dict[str, Any]:
    return {
        "PatientID": patient,
        "PatientName": "Martin^Claire",
        "PatientBirthDate": "19700101",
        "AccessionNumber": f"ACC-{study[-4:]}",
        "StudyInstanceUID": "1.3.6.1.4.1.9999." + study[5:],
        "SeriesInstanceUID": "1.3.6.1.4.1.9999." + series[5:],
        "SOPInstanceUID": "1.3.6.1.4.1.9999." + sop[5:],
    }


# The corpus: four studies, chosen so that each PS3.4 C.2.2.2 matching type has hits and misses.
S1, S2, S3, S4 = "2.25.1001", "2.25.1002", "2.25.1003", "2.25.1004"
S1_MR, S2_CT, S2_SR, S3_MR, S4_MR = "2.25.2011", "2.25.2021", "2.25.2022", "2.25.2031", "2.25.2041"
CORPUS: list[dict[str, Any]] = [
    dataset(S1, S1_MR, "2.25.3011", instance_number=1),
    dataset(S1, S1_MR, "2.25.3012", instance_number=2),
    dataset(
        S2, S2_CT, "2.25.3021", patient="PSN-002", name="Roe^Richard", date="20201231",
        time="235959", accession="B200", description="Chest CT 50%_off", modality="CT",
        sop_class=CT,
    ),
    dataset(
        S2, S2_SR, "2.25.3022", patient="PSN-002", name="Roe^Richard", date="20201231",
        time="235959", accession="B200", description="Chest CT 50%_off", modality="SR",
        series_number=2, sop_class=SR,
    ),
    dataset(S3, S3_MR, "2.25.3031", date="20210301", time="080000", accession="A101",
            description="Brain_MRI follow-up"),
    dataset(S4, S4_MR, "2.25.3041", patient="PSN-003", name="doe^john", date="20190610",
            time="120030", accession="C300", description="Knee\\MRI"),
]  # fmt: skip


def seed(dbs: CatalogDatabases) -> None:
    """Register the corpus (with identities) and the ACLs of the test identities."""
    admin = caller(ADMIN)
    with dbs.catalog.session(write=True) as cs:
        if dbs.separate_vault:
            with dbs.vault.session(write=True) as vs:
                _seed(cs, vs, admin)
        else:
            _seed(cs, cs, admin)
        access.set_acl(
            cs, f"/dicom/{S1}", {f"dn:{ALICE.dn}": ["list"], f"dn:{CAROL.dn}": ["identity"]}
        )
        access.set_acl(cs, "/dicom", {"fqan:/mdm/radiology": ["list", "read"]})
        access.set_acl(cs, f"/dicom/{S2}/{S2_CT}", {f"dn:{SAM.dn}": ["list", "read"]})


def _seed(cs: Any, vs: Any, admin: Caller) -> None:
    for ds in CORPUS:
        study, series, sop = (ds[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        body = {
            "dataset": ds,
            "original": original(study, series, sop),
            "replica": {"se": "MDM-SE", "url": f"https://se/dicom/{study}/{series}/{sop}"},
        }
        register(cs, vs, admin, Registration.from_json(body))


def make_dbs(url: str, vault_url: str | None = None) -> CatalogDatabases:
    dbs = CatalogDatabases(url, vault_url, busy_timeout=10)
    upgrade(dbs)
    return dbs


@pytest.fixture(scope="module")
def dbs(catalog_url: str) -> Iterator[CatalogDatabases]:
    databases = make_dbs(catalog_url)
    seed(databases)
    try:
        yield databases
    finally:
        databases.dispose()


@pytest.fixture(scope="module")
def app(dbs: CatalogDatabases) -> Any:
    """The catalog app on *dbs*, with ADMIN and SERVICE in their roles, taking the caller's
    identity from test headers (``identity_headers``) instead of a TLS handshake."""
    from mdm.servers.catalog_app import create_app
    from mdm.settings import CatalogSettings, Settings

    settings = Settings(
        catalog=CatalogSettings(
            database_url=dbs.catalog.url, admin_dns=(ADMIN.dn,), service_dns=(SERVICE.dn,)
        )
    )
    return with_test_identity(create_app(settings, databases=dbs))


@pytest.fixture
def empty_queue(dbs: CatalogDatabases) -> CatalogDatabases:
    with dbs.catalog.session(write=True) as s:
        s.execute(delete(StageFile))
        s.execute(delete(StageRequest))
    return dbs


class SyncASGITransport(httpx.BaseTransport):
    """Drive an ASGI app from the synchronous client, in-process (httpx's is async only)."""

    def __init__(self, app: Any) -> None:
        self._transport = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def run() -> tuple[int, httpx.Headers, bytes]:
            response = await self._transport.handle_async_request(request)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = asyncio.run(run())
        return httpx.Response(status, headers=headers, content=content)


def with_test_identity(app: Any) -> Any:
    """What the TLS layer does, for in-process tests: the identity named by test headers."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            dn = headers.get(b"x-test-dn")
            if dn:
                fqans = tuple(f for f in headers.get(b"x-test-fqans", b"").decode().split(",") if f)
                scope["extensions"] = {SCOPE_KEY: Identity(dn.decode(), fqans)}
        await app(scope, receive, send)

    return wrapped


def identity_headers(who: Identity | None) -> dict[str, str]:
    if who is None:
        return {}
    return {"x-test-dn": who.dn, "x-test-fqans": ",".join(who.fqans)}
