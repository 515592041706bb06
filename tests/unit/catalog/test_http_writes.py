"""The catalog's write endpoints over HTTP, in-process, on a real SQLite catalog.

``PUT /files/content``, ``POST``/``DELETE /files/replicas``, ``/staging/requests/{id}/cancel``,
``/staging/extend`` and ``/staging/files/{id}/complete|fail``: each one succeeds for the caller
it is meant for, and refuses (as problem+json naming the error class) a caller without a
certificate, one without the right, a user where a service is required, a malformed body, an
unknown file and a claim that is not held. Every refusal is checked to have left the catalog
as it was. The shared JSON body reader (``mdm.servers.http.read_json``) is driven through the
same app: its size cap, a lying ``Content-Length`` and the JSON values Python accepts but no
field can hold (``NaN``, ``1e999``).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import String, select

from mdm.acl import Identity
from mdm.catalog import access
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.models import Entry, Replica, StageFile
from mdm.servers import catalog_staging
from mdm.servers.catalog_service import MAX_BODY
from tests.unit.catalog.helpers import (
    ALICE,
    BOB,
    EVE,
    SERVICE,
    SyncASGITransport,
    app,
    dataset,
    dbs,
    empty_queue,
    identity_headers,
)

__all__ = ["app", "dbs", "empty_queue"]

# Writes here use their own study, so the seeded corpus the other modules read stays intact.
STUDY = "2.25.7700"
SERIES = "2.25.7701"
OTHER = "2.25.7702"  # a second series: claims take one series at a time
#: May list and write below STUDY only, by ACL: a user with the right, not a service.
WRITER = Identity("/DC=org/DC=mdmtest/O=Hospital/CN=Wanda Writer")
SHA = "ab" * 32
ADLER = "0a0b0c0d"
_sops = itertools.count(1)


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('writes')}/catalog.db"


@pytest.fixture(scope="module")
def http(app: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url="http://catalog", transport=SyncASGITransport(app)) as client:
        yield client


def as_(who: Identity | None) -> dict[str, str]:
    return identity_headers(who)


def problem(r: httpx.Response, status: int, kind: str, *words: str) -> dict[str, Any]:
    """Assert *r* is an RFC 9457 problem of class *kind* whose detail names *words*."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == kind, body
    assert body["status"] == status
    for word in words:
        assert word in body["detail"], body
    return body


def new_file(
    http: httpx.Client, series: str = SERIES, replica: dict[str, Any] | None = None
) -> str:
    """Register a fresh NEARLINE instance (as the service) and return its LFN."""
    sop = f"2.25.77{next(_sops):04d}"
    body: dict[str, Any] = {"dataset": dataset(STUDY, series, sop)}
    body["replica"] = replica or {"se": "MDM-SE", "url": f"https://se/dicom/{sop}"}
    r = http.post("/files", json=body, headers=as_(SERVICE))
    assert r.status_code == 201, r.text
    path = r.json()["entry"]["path"]
    assert isinstance(path, str)
    return path


@pytest.fixture(scope="module")
def writer_acl(dbs: CatalogDatabases, http: httpx.Client) -> None:
    new_file(http)  # creates the study directory the grant is set on
    with dbs.catalog.session(write=True) as s:
        access.set_acl(s, f"/dicom/{STUDY}", {f"dn:{WRITER.dn}": ["list", "write"]})


def entry(dbs: CatalogDatabases, path: str) -> Entry:
    with dbs.catalog.session() as s:
        found = s.scalar(select(Entry).where(Entry.path == path))
        assert found is not None
        s.expunge(found)
        return found


def replicas(dbs: CatalogDatabases, path: str) -> dict[str, Replica]:
    with dbs.catalog.session() as s:
        rows = s.scalars(select(Replica).join(Entry).where(Entry.path == path)).all()
        for row in rows:
            s.expunge(row)
        return {r.se: r for r in rows}


def stage_file(dbs: CatalogDatabases, file_id: int) -> StageFile:
    with dbs.catalog.session() as s:
        found = s.get(StageFile, file_id)
        assert found is not None
        s.expunge(found)
        return found


# ---------------------------------------------------------------------- PUT /files/content


def test_content_is_recorded_once_and_must_match_later(
    http: httpx.Client, dbs: CatalogDatabases
) -> None:
    path = new_file(http)
    content = {"path": path, "size": 1234, "adler32": ADLER, "sha256": SHA, "key_id": "k-1"}
    r = http.put("/files/content", json=content, headers=as_(SERVICE))
    assert r.status_code == 200, r.text
    assert (r.json()["size"], r.json()["sha256"]) == (1234, SHA)
    stored = entry(dbs, path)
    assert (stored.size, stored.adler32, stored.sha256, stored.key_id) == (1234, ADLER, SHA, "k-1")
    # A re-recall gives the same bytes: same values are fine, different ones are refused.
    assert http.put("/files/content", json=content, headers=as_(SERVICE)).status_code == 200
    r = http.put("/files/content", json={**content, "sha256": "cd" * 32}, headers=as_(SERVICE))
    problem(r, 500, "ChecksumMismatch", "sha256")
    assert entry(dbs, path).sha256 == SHA


def test_content_needs_write_on_the_file(
    http: httpx.Client, dbs: CatalogDatabases, writer_acl: None
) -> None:
    path = new_file(http)
    body = {"path": path, "size": 10}
    problem(http.put("/files/content", json=body), 401, "AuthenticationRequired")
    problem(http.put("/files/content", json=body, headers=as_(BOB)), 403, "PermissionDenied")
    # Eve may not even list it: the same answer as for a file that does not exist (no probing).
    problem(http.put("/files/content", json=body, headers=as_(EVE)), 404, "FileNotFound")
    assert entry(dbs, path).size is None
    # A user granted write below the study may record it, like the service.
    r = http.put("/files/content", json=body, headers=as_(WRITER))
    assert r.status_code == 200, r.text
    assert entry(dbs, path).size == 10


def test_content_of_an_unknown_file_is_404(http: httpx.Client) -> None:
    body = {"path": f"/dicom/{STUDY}/{SERIES}/2.25.999999", "size": 1}
    problem(http.put("/files/content", json=body, headers=as_(SERVICE)), 404, "FileNotFound")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"path": None, "size": 1}, ["'path'", "required"]),
        ({"path": 17, "size": 1}, ["'path'", "string"]),
        ({"size": "12"}, ["size", "integer"]),
        ({"size": -1}, ["size", "between"]),
        ({"size": 2**64}, ["size", "between"]),
        ({"size": True}, ["size", "integer"]),
        ({"size": 1.5}, ["size", "integer"]),
        ({"adler32": 12345678}, ["adler32", "string"]),
        ({"adler32": "XYZ"}, ["adler32"]),
        ({"sha256": ["ab"]}, ["sha256", "string"]),
        ({"sha256": "ab"}, ["sha256"]),
        ({"key_id": "k" * 65}, ["key_id", "64"]),
        ({"path": "/elsewhere/x"}, ["/dicom"]),
    ],
    ids=lambda v: str(v)[:30],
)
def test_malformed_content_is_refused(
    http: httpx.Client, dbs: CatalogDatabases, body: dict[str, Any], words: list[str]
) -> None:
    path = new_file(http)
    r = http.put("/files/content", json={"path": path, **body}, headers=as_(SERVICE))
    problem(r, 400, "UsageError", *words)
    stored = entry(dbs, path)
    assert (stored.size, stored.adler32, stored.sha256, stored.key_id) == (None,) * 4


# --------------------------------------------------------------- POST|DELETE /files/replicas


def test_replica_add_update_and_remove(http: httpx.Client, dbs: CatalogDatabases) -> None:
    path = new_file(http)
    pin = "2030-01-01T00:00:00+00:00"
    body = {"path": path, "se": "SITE-B", "url": "davs://b/x", "state": "online",
            "pinned_until": pin, "size": 99, "adler32": ADLER}  # fmt: skip
    r = http.post("/files/replicas", json=body, headers=as_(SERVICE))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ONLINE"
    got = replicas(dbs, path)
    assert set(got) == {"MDM-SE", "SITE-B"}
    assert got["SITE-B"].pinned_until == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert (got["SITE-B"].size, got["SITE-B"].adler32) == (99, ADLER)
    # The same SE again updates its replica (no second row); FAILED drops the pin.
    failed = {"path": path, "se": "SITE-B", "url": "davs://b/x", "state": "FAILED",
              "reason": "disk lost"}  # fmt: skip
    assert http.post("/files/replicas", json=failed, headers=as_(SERVICE)).status_code == 200
    got = replicas(dbs, path)
    assert len(got) == 2
    assert (got["SITE-B"].state.value, got["SITE-B"].reason) == ("FAILED", "disk lost")
    assert got["SITE-B"].pinned_until is None
    r = http.delete("/files/replicas", params={"path": path, "se": "SITE-B"}, headers=as_(SERVICE))
    assert r.status_code == 204, r.text
    assert set(replicas(dbs, path)) == {"MDM-SE"}
    # Removing it twice: the replica is gone, and the answer says which one.
    r = http.delete("/files/replicas", params={"path": path, "se": "SITE-B"}, headers=as_(SERVICE))
    problem(r, 404, "FileNotFound", "SITE-B")


def test_replica_writes_need_write(
    http: httpx.Client, dbs: CatalogDatabases, writer_acl: None
) -> None:
    path = new_file(http)
    body = {"path": path, "se": "SITE-C", "url": "davs://c/x"}
    gone = {"path": path, "se": "MDM-SE"}
    problem(http.post("/files/replicas", json=body), 401, "AuthenticationRequired")
    problem(http.delete("/files/replicas", params=gone), 401, "AuthenticationRequired")
    for who, status, kind in ((BOB, 403, "PermissionDenied"), (ALICE, 404, "FileNotFound")):
        problem(http.post("/files/replicas", json=body, headers=as_(who)), status, kind)
        r = http.delete("/files/replicas", params=gone, headers=as_(who))
        problem(r, status, kind)
    assert set(replicas(dbs, path)) == {"MDM-SE"}
    assert http.post("/files/replicas", json=body, headers=as_(WRITER)).status_code == 200
    assert http.delete("/files/replicas", params=gone, headers=as_(WRITER)).status_code == 204
    assert set(replicas(dbs, path)) == {"SITE-C"}


def test_replicas_of_unknown_files_and_directories(http: httpx.Client) -> None:
    new_file(http)  # the study and series directories exist, whatever ran before
    missing = f"/dicom/{STUDY}/{SERIES}/2.25.999999"
    body = {"path": missing, "se": "SITE-B", "url": "davs://b/x"}
    problem(http.post("/files/replicas", json=body, headers=as_(SERVICE)), 404, "FileNotFound")
    r = http.delete("/files/replicas", params={"path": missing, "se": "MDM-SE"},
                    headers=as_(SERVICE))  # fmt: skip
    problem(r, 404, "FileNotFound")
    body["path"] = f"/dicom/{STUDY}"
    problem(http.post("/files/replicas", json=body, headers=as_(SERVICE)), 400, "UsageError",
            "directory")  # fmt: skip
    r = http.delete("/files/replicas", params={"path": body["path"]}, headers=as_(SERVICE))
    problem(r, 400, "UsageError", "'se'")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"se": None}, ["'se'", "required"]),
        ({"se": "S" * 65}, ["'se'", "64"]),
        ({"se": 5}, ["'se'", "string"]),
        ({"url": None}, ["'url'", "required"]),
        ({"state": "LOST"}, ["replica"]),
        ({"state": "FAILED"}, ["reason"]),
        ({"state": "FAILED", "reason": 42}, ["reason", "string"]),
        ({"state": "ONLINE", "pinned_until": "2030-01-01T00:00:00"}, ["pinned_until", "UTC"]),
        ({"state": "ONLINE", "pinned_until": "tomorrow"}, ["replica"]),
        ({"size": "big"}, ["size"]),
        ({"sha256": 1}, ["sha256", "string"]),
    ],
    ids=lambda v: str(v)[:30],
)
def test_malformed_replicas_are_refused(
    http: httpx.Client, dbs: CatalogDatabases, body: dict[str, Any], words: list[str]
) -> None:
    path = new_file(http)
    full = {"path": path, "se": "SITE-D", "url": "davs://d/x", **body}
    problem(
        http.post("/files/replicas", json=full, headers=as_(SERVICE)), 400, "UsageError", *words
    )
    assert set(replicas(dbs, path)) == {"MDM-SE"}


@pytest.mark.parametrize(
    ("file", "replica", "words"),
    [
        ({"size": 2**64}, None, ["size", "between"]),
        ({"size": -1}, None, ["size", "between"]),
        ({"key_id": "k" * 65}, None, ["key_id", "64"]),
        ({}, {"se": "S" * 65, "url": "https://se/x"}, ["'se'", "64"]),
    ],
    ids=["size-past-64-bits", "negative-size", "long-key-id", "long-se"],
)
def test_registrations_past_the_column_limits_are_400s(
    http: httpx.Client, file: dict[str, Any], replica: dict[str, Any] | None, words: list[str]
) -> None:
    """The limits live in the catalog layer: ``POST /files`` and ``/files/batch`` get them
    too (before: a size past 64 bits was a 500, a long key id or SE name a driver error)."""
    sop = f"2.25.77990{len(words)}{len(str(file))}"
    body: dict[str, Any] = {"dataset": dataset(STUDY, SERIES, sop), "file": file}
    if replica is not None:
        body["replica"] = replica
    problem(http.post("/files", json=body, headers=as_(SERVICE)), 400, "UsageError", *words)
    r = http.post("/files/batch", json={"registrations": [body]}, headers=as_(SERVICE))
    problem(r, 400, "UsageError", *words)


def test_a_naive_pin_time_in_a_registration_is_refused(http: httpx.Client) -> None:
    # Before: a pin time without an offset reached the database layer and failed there (500).
    replica = {"se": "MDM-SE", "url": "https://se/x", "state": "ONLINE",
               "pinned_until": "2030-01-01T00:00:00"}  # fmt: skip
    body = {"dataset": dataset(STUDY, SERIES, "2.25.7799001"), "replica": replica}
    problem(http.post("/files", json=body, headers=as_(SERVICE)), 400, "UsageError", "UTC")
    r = http.post("/files/batch", json={"registrations": [body]}, headers=as_(SERVICE))
    problem(r, 400, "UsageError", "UTC")
    r = http.get("/files/stat", params={"path": f"/dicom/{STUDY}/{SERIES}/2.25.7799001"},
                 headers=as_(SERVICE))  # fmt: skip
    problem(r, 404, "FileNotFound")


# ------------------------------------------------------------------------------ staging


@pytest.fixture
def queued(http: httpx.Client, empty_queue: CatalogDatabases) -> tuple[str, list[str]]:
    """A staging request by Bob (read on /dicom through his VOMS group) for two files of one
    series and one of another; returns (request id, paths)."""
    paths = [new_file(http), new_file(http), new_file(http, OTHER)]
    r = http.post("/staging/requests", json={"paths": paths}, headers=as_(BOB))
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), paths


def claim(http: httpx.Client, worker: str = "w1", **extra: Any) -> list[dict[str, Any]]:
    r = http.post("/staging/claim", json={"worker": worker, **extra}, headers=as_(SERVICE))
    assert r.status_code == 200, r.text
    files: list[dict[str, Any]] = r.json()["files"]
    return files


def test_extend_renews_the_lease_of_held_files(
    http: httpx.Client, dbs: CatalogDatabases, queued: tuple[str, list[str]]
) -> None:
    held = claim(http, lease=30)
    assert len(held) == 2
    ids = [f["id"] for f in held]
    before = stage_file(dbs, ids[0]).claim_expires
    assert before is not None
    r = http.post("/staging/extend", json={"worker": "w1", "ids": ids, "lease": 3600},
                  headers=as_(SERVICE))  # fmt: skip
    assert r.status_code == 204, r.text
    for file_id in ids:
        after = stage_file(dbs, file_id).claim_expires
        assert after is not None
        assert after - before > dt.timedelta(minutes=50)
    # Without a lease, the configured one (300 s by default) applies.
    assert http.post("/staging/extend", json={"worker": "w1", "ids": ids},
                     headers=as_(SERVICE)).status_code == 204  # fmt: skip
    renewed = stage_file(dbs, ids[0]).claim_expires
    assert renewed is not None
    assert dt.timedelta(seconds=250) < renewed - dt.datetime.now(dt.UTC) < dt.timedelta(seconds=310)


def test_extend_refusals(
    http: httpx.Client, dbs: CatalogDatabases, queued: tuple[str, list[str]]
) -> None:
    held = claim(http)
    file_id = held[0]["id"]
    expires = stage_file(dbs, file_id).claim_expires
    body = {"worker": "w1", "ids": [file_id], "lease": 600}
    problem(http.post("/staging/extend", json=body), 401, "AuthenticationRequired")
    # Bob may stage the files, but only services claim and renew work.
    r = http.post("/staging/extend", json=body, headers=as_(BOB))
    problem(r, 403, "PermissionDenied", "service")
    r = http.post("/staging/extend", json={**body, "worker": "w2"}, headers=as_(SERVICE))
    problem(r, 409, "Conflict", "not held by w2")
    r = http.post("/staging/extend", json={**body, "ids": [10**9]}, headers=as_(SERVICE))
    problem(r, 404, "NotFound", str(10**9))
    assert stage_file(dbs, file_id).claim_expires == expires


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lease": "abc"}, ["lease", "number", "a string"]),
        ({"lease": "600"}, ["lease", "number"]),
        ({"lease": 0}, ["lease", "more than 0"]),
        ({"lease": -5}, ["lease"]),
        ({"lease": True}, ["lease", "a boolean"]),
        ({"lease": 10**6}, ["lease", "at most"]),
        ({"lease": [1]}, ["lease", "an array"]),
        ({"ids": "1"}, ["'ids'", "list"]),
        ({"ids": None}, ["'ids'", "list"]),
        ({"ids": ["x"]}, ["ids", "integer"]),
        ({"ids": [True]}, ["ids", "integer"]),
        ({"ids": [1.5]}, ["ids", "integer"]),
        ({"ids": [0]}, ["ids", "between"]),
        ({"ids": [2**64]}, ["ids", "between"]),
        ({"worker": 7}, ["'worker'", "string"]),
        ({"worker": "w" * 129}, ["worker", "128"]),
    ],
    ids=lambda v: str(v)[:30],
)
def test_malformed_extend_is_a_400_naming_the_field(
    http: httpx.Client,
    dbs: CatalogDatabases,
    queued: tuple[str, list[str]],
    change: dict[str, Any],
    words: list[str],
) -> None:
    file_id = claim(http)[0]["id"]
    expires = stage_file(dbs, file_id).claim_expires
    body = {"worker": "w1", "ids": [file_id], "lease": 600, **change}
    problem(
        http.post("/staging/extend", json=body, headers=as_(SERVICE)), 400, "UsageError", *words
    )
    assert stage_file(dbs, file_id).claim_expires == expires


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lease": "abc"}, ["lease", "number"]),  # was a 500 (float("abc"))
        ({"lease": 0}, ["lease", "more than 0"]),  # was silently the default lease
        ({"lease": 1e9}, ["lease", "at most"]),
        ({"limit": "many"}, ["limit", "integer"]),
        ({"limit": 0}, ["limit", "between"]),
        ({"limit": 2**70}, ["limit", "between"]),
        ({"limit": 2.5}, ["limit", "integer"]),
        ({"worker": {"name": "w"}}, ["'worker'", "string"]),
        ({"worker": "w" * 129}, ["worker", "128"]),
    ],
    ids=lambda v: str(v)[:30],
)
def test_malformed_claim_is_a_400_and_claims_nothing(
    http: httpx.Client,
    dbs: CatalogDatabases,
    queued: tuple[str, list[str]],
    change: dict[str, Any],
    words: list[str],
) -> None:
    r = http.post("/staging/claim", json={"worker": "w1", **change}, headers=as_(SERVICE))
    problem(r, 400, "UsageError", *words)
    assert claim(http, "w9", limit=10) != []  # the queue was left untouched


def test_claim_needs_a_service(http: httpx.Client, queued: tuple[str, list[str]]) -> None:
    problem(http.post("/staging/claim", json={}), 401, "AuthenticationRequired")
    for who in (BOB, WRITER):
        r = http.post("/staging/claim", json={"worker": "w"}, headers=as_(who))
        problem(r, 403, "PermissionDenied", "service")
    assert len(claim(http, limit=1)) == 1
    assert len(claim(http, limit=5)) == 1  # the rest of the first series
    # Without a worker name the caller's DN names the claim.
    assert claim(http, "")[0]["claimed_by"] == SERVICE.dn


def test_complete_and_fail_finish_held_files(
    http: httpx.Client, dbs: CatalogDatabases, queued: tuple[str, list[str]]
) -> None:
    rid, _ = queued
    first, second = claim(http)
    r = http.post(f"/staging/files/{first['id']}/complete", json={"worker": "w1"},
                  headers=as_(SERVICE))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "COMPLETED"
    done = stage_file(dbs, first["id"])
    assert (done.state.value, done.claim_expires, done.finished is not None) == (
        "COMPLETED", None, True,
    )  # fmt: skip
    r = http.post(f"/staging/files/{second['id']}/fail",
                  json={"worker": "w1", "reason": "PACS refused C-GET"},
                  headers=as_(SERVICE))  # fmt: skip
    assert r.status_code == 200, r.text
    failed = stage_file(dbs, second["id"])
    assert (failed.state.value, failed.reason) == ("FAILED", "PACS refused C-GET")
    # Bob sees the outcome of his request.
    states = {f["id"]: f["state"] for f in http.get(f"/staging/requests/{rid}",
                                                   headers=as_(BOB)).json()["files"]}  # fmt: skip
    assert (states[first["id"]], states[second["id"]]) == ("COMPLETED", "FAILED")
    # Finishing again: the claim is no longer held, and the state does not change.
    r = http.post(f"/staging/files/{first['id']}/fail", json={"worker": "w1", "reason": "x"},
                  headers=as_(SERVICE))  # fmt: skip
    problem(r, 409, "Conflict", "not held")
    assert stage_file(dbs, first["id"]).state.value == "COMPLETED"


def test_finish_refusals(
    http: httpx.Client, dbs: CatalogDatabases, queued: tuple[str, list[str]]
) -> None:
    file_id = claim(http)[0]["id"]
    url = f"/staging/files/{file_id}"
    body = {"worker": "w1", "reason": "broken"}
    for outcome in ("complete", "fail"):
        problem(http.post(f"{url}/{outcome}", json=body), 401, "AuthenticationRequired")
        r = http.post(f"{url}/{outcome}", json=body, headers=as_(BOB))
        problem(r, 403, "PermissionDenied", "service")
        r = http.post(f"{url}/{outcome}", json={**body, "worker": "w2"}, headers=as_(SERVICE))
        problem(r, 409, "Conflict", "not held by w2")
        r = http.post(f"/staging/files/999999999/{outcome}", json=body, headers=as_(SERVICE))
        problem(r, 404, "NotFound", "999999999")
        r = http.post(f"/staging/files/{2**64}/{outcome}", json=body, headers=as_(SERVICE))
        problem(r, 400, "UsageError", "file id")
    problem(http.post(f"{url}/explode", json=body, headers=as_(SERVICE)), 400, "UsageError",
            "complete or fail")  # fmt: skip
    for bad, words in (({"worker": "w1"}, ["'reason'", "required"]),
                       ({"worker": "w1", "reason": 500}, ["'reason'", "string"]),
                       ({"worker": "w1", "reason": "  "}, ["reason"])):  # fmt: skip
        r = http.post(f"{url}/fail", json=bad, headers=as_(SERVICE))
        problem(r, 400, "UsageError", *words)
    r = http.post(f"{url}/complete", content=b"{worker: w1}", headers=as_(SERVICE))
    problem(r, 400, "UsageError", "not valid JSON")
    held = stage_file(dbs, file_id)
    assert (held.state.value, held.claimed_by) == ("STARTED", "w1")


def test_cancel_by_the_owner(
    http: httpx.Client, dbs: CatalogDatabases, queued: tuple[str, list[str]]
) -> None:
    rid, paths = queued
    url = f"/staging/requests/{rid}/cancel"
    problem(http.post(url, json={}), 401, "AuthenticationRequired")
    problem(http.post(url, json={}, headers=as_(ALICE)), 404, "NotFound")  # not hers
    problem(http.post("/staging/requests/nope/cancel", json={}, headers=as_(BOB)), 404,
            "NotFound")  # fmt: skip
    for bad, words in (({"paths": []}, ["non-empty"]), ({"paths": "x"}, ["'paths'"]),
                       ({"paths": [1]}, ["'paths'"]),
                       ({"paths": ["/dicom/elsewhere"]}, ["not in this request"])):  # fmt: skip
        problem(http.post(url, json=bad, headers=as_(BOB)), 400, "UsageError", *words)
    r = http.post(url, json={"paths": paths[:1]}, headers=as_(BOB))
    assert r.status_code == 200, r.text
    states = {f["path"]: f["state"] for f in r.json()["files"]}
    assert states == {paths[0]: "CANCELLED", paths[1]: "SUBMITTED", paths[2]: "SUBMITTED"}
    r = http.post(url, content=b"", headers=as_(BOB))  # no body: the whole request
    assert r.status_code == 200, r.text
    assert {f["state"] for f in r.json()["files"]} == {"CANCELLED"}
    assert r.json()["cancelled"] is not None
    assert claim(http) == []


# ------------------------------------------------------------------- the JSON body reader


def test_bodies_over_the_limit_are_413_before_anything_is_done(
    http: httpx.Client, dbs: CatalogDatabases
) -> None:
    path = new_file(http)
    padding = "x" * MAX_BODY
    r = http.put("/files/content", json={"path": path, "key_id": "k", "pad": padding},
                 headers=as_(SERVICE))  # fmt: skip
    body = problem(r, 413, "RequestTooLarge", str(MAX_BODY))
    assert body["context"]["limit"] == MAX_BODY
    # A client declaring a small length and sending more is cut off while streaming.
    raw = http.build_request("PUT", "/files/content", content=b"[" + b" " * MAX_BODY + b"]",
                             headers={**as_(SERVICE), "content-length": "10"})  # fmt: skip
    problem(http.send(raw), 413, "RequestTooLarge")
    # A body without any declared length (chunked) is capped the same way.
    raw = http.build_request("PUT", "/files/content", content=b" " * (MAX_BODY + 1),
                             headers=as_(SERVICE))  # fmt: skip
    del raw.headers["content-length"]
    problem(http.send(raw), 413, "RequestTooLarge")
    raw = http.build_request("PUT", "/files/content", content=b"{}",
                             headers={**as_(SERVICE), "content-length": "ten"})  # fmt: skip
    problem(http.send(raw), 400, "UsageError", "Content-Length")
    assert entry(dbs, path).key_id is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", ["not valid JSON"]),
        (b"\xff\xfe\x00", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object", "an array"]),
        (b'"text"', ["JSON object", "a string"]),
        (b"[" * 100_000 + b"]" * 100_000, ["not valid JSON"]),
        (b'{"path": "/dicom/x", "size": NaN}', ["NaN"]),
        (b'{"path": "/dicom/x", "lease": Infinity}', ["Infinity"]),
        (b'{"path": "/dicom/x", "size": 1e999}', ["out of range"]),
    ],
    ids=["syntax", "encoding", "array", "string", "deep", "nan", "infinity", "overflow"],
)
def test_malformed_json_is_a_400_naming_the_problem(
    http: httpx.Client, content: bytes, words: list[str]
) -> None:
    r = http.put("/files/content", content=content, headers=as_(SERVICE))
    problem(r, 400, "UsageError", *words)


def test_limits_match_the_columns_they_protect() -> None:
    for model, column, limit in ((StageFile, "claimed_by", catalog_staging.MAX_WORKER),):
        kind = model.__table__.c[column].type
        assert isinstance(kind, String)
        assert kind.length == limit, (model, column)


def test_every_route_is_described_in_openapi_and_nothing_else() -> None:
    """Each ``catalog_*`` module keeps ``ROUTES`` and ``ROUTES_DOC`` side by side: a route
    added without its description, or a description left behind, fails here. (One route may
    serve several documented paths: ``/staging/files/{fid}/{outcome}``.)"""
    import re

    from starlette.routing import Route

    from mdm.servers.catalog_app import openapi_schema, routes

    def pattern(path: str) -> re.Pattern[str]:
        return re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")

    served = [
        (method.lower(), pattern(r.path), r.path)
        for r in routes()
        if isinstance(r, Route) and r.path not in ("/", "/openapi.json")
        for method in (r.methods or set()) - {"HEAD"}
    ]
    documented = {(m, p) for p, ops in openapi_schema()["paths"].items() for m in ops}
    for method, path in documented:
        assert any(m == method and rx.match(path) for m, rx, _ in served), (method, path)
    for method, rx, path in served:
        assert any(m == method and rx.match(p) for m, p in documented), (method, path)
