"""The WLCG Tape REST API v1 of the SE, in process, with the quirks of gfal2 2.21.3."""

from __future__ import annotations

import httpx
import pytest

from mdm.servers.se_tape import parse_duration
from mdm.storage import PosixNearline
from tests.unit.storage.conftest import ALICE, BIG, BOB, CAROL, CLOSED, EVE, SERIES, SMALL, as_

pytestmark = pytest.mark.anyio
API = "/api/v1"


async def stage(client: httpx.AsyncClient, *paths: str, who=ALICE, slash: str = "/") -> str:  # type: ignore[no-untyped-def]
    body = {"files": [{"path": p} for p in paths]}
    r = await client.post(f"{API}/stage{slash}", json=body, headers=as_(who))
    assert r.status_code == 201, r.text
    rid = r.json()["requestId"]
    assert r.headers["location"] == f"https://se.test{API}/stage/{rid}"
    return str(rid)


async def poll(client: httpx.AsyncClient, rid: str, who=ALICE) -> dict:  # type: ignore[no-untyped-def, type-arg]
    r = await client.get(f"{API}/stage/{rid}", headers=as_(who))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def locality(client: httpx.AsyncClient, *paths: str, slash: str = "/") -> list:  # type: ignore[type-arg]
    r = await client.post(
        f"{API}/archiveinfo{slash}", json={"paths": list(paths)}, headers=as_(ALICE)
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_discovery_is_public_and_points_at_v1(client: httpx.AsyncClient) -> None:
    r = await client.get("/.well-known/wlcg-tape-rest-api")
    assert r.status_code == 200
    doc = r.json()
    assert doc["sitename"] == "mdm-unit"
    assert doc["endpoints"] == [{"uri": "https://se.test/api/v1/", "version": "v1", "metadata": {}}]


@pytest.mark.parametrize("slash", ["/", ""])  # gfal2 2.21.3 sends the slash, >= 2.22.2 does not
async def test_stage_poll_complete(
    client: httpx.AsyncClient, store: PosixNearline, slash: str
) -> None:
    rid = await stage(client, BIG, "//dicom/2.25.1/2.25.11//2.25.112", slash=slash)
    doc = await poll(client, rid)
    assert doc["id"] == rid
    assert doc["startedAt"] == doc["createdAt"]
    assert "completedAt" not in doc
    assert doc["files"] == [
        {"path": BIG, "state": "SUBMITTED"},
        {"path": SMALL, "state": "SUBMITTED"},
    ]
    store.recall_once()
    doc = await poll(client, rid)
    assert {f["state"] for f in doc["files"]} == {"COMPLETED"}
    for f in doc["files"]:
        assert set(f) == {"path", "state", "startedAt", "finishedAt"}, "no error key, no onDisk"
    assert doc["completedAt"] >= doc["createdAt"]
    assert await locality(client, BIG, slash=slash) == [{"path": BIG, "locality": "DISK_AND_TAPE"}]


async def test_archiveinfo_localities_and_errors(client: httpx.AsyncClient) -> None:
    answer = await locality(client, SMALL, f"{SERIES}/nope", "/dicom/../x")
    assert answer[0] == {"path": SMALL, "locality": "TAPE"}
    assert set(answer[1]) == {"path", "error"}, "a missing file has an error and no locality"
    assert answer[2] == {"path": "/dicom/../x", "error": "invalid path"}


async def test_release_with_the_gfal_placeholder_id_evicts(
    client: httpx.AsyncClient, store: PosixNearline
) -> None:
    await stage(client, SMALL)
    store.recall_once()
    r = await client.post(
        f"{API}/release/gfal2-placeholder-id", json={"paths": [SMALL]}, headers=as_(ALICE)
    )
    assert r.status_code == 200
    assert r.content == b""
    assert await locality(client, SMALL) == [{"path": SMALL, "locality": "TAPE"}]


async def test_release_by_request_id(client: httpx.AsyncClient, store: PosixNearline) -> None:
    rid = await stage(client, SMALL)
    store.recall_once()
    r = await client.post(f"{API}/release/{rid}/", json={"paths": [SMALL]}, headers=as_(ALICE))
    assert r.status_code == 200
    assert (await locality(client, SMALL))[0]["locality"] == "TAPE"


async def test_cancel(client: httpx.AsyncClient, store: PosixNearline) -> None:
    rid = await stage(client, BIG, SMALL)
    r = await client.post(
        f"{API}/stage/{rid}/cancel", json={"paths": [BIG, CLOSED]}, headers=as_(ALICE)
    )
    assert r.status_code == 403, "a path Alice may not read: nothing is done"
    r = await client.post(
        f"{API}/stage/{rid}/cancel", json={"paths": [BIG, f"{SERIES}/other"]}, headers=as_(ALICE)
    )
    assert r.status_code == 400
    assert "does not belong" in r.json()["detail"]
    assert {f["state"] for f in (await poll(client, rid))["files"]} == {"SUBMITTED"}
    r = await client.post(f"{API}/stage/{rid}/cancel", json={"paths": [BIG]}, headers=as_(ALICE))
    assert r.status_code == 200
    store.recall_once()
    states = {f["path"]: f["state"] for f in (await poll(client, rid))["files"]}
    assert states == {BIG: "CANCELLED", SMALL: "COMPLETED"}


async def test_delete_request(client: httpx.AsyncClient) -> None:
    rid = await stage(client, SMALL)
    assert (await client.delete(f"{API}/stage/{rid}", headers=as_(CAROL))).status_code == 404
    assert (await client.delete(f"{API}/stage/{rid}", headers=as_(ALICE))).status_code == 200
    r = await client.get(f"{API}/stage/{rid}", headers=as_(ALICE))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_failed_files_carry_their_reason(
    client: httpx.AsyncClient, store: PosixNearline
) -> None:
    rid = await stage(client, SMALL, f"{SERIES}/nope")
    store.recall_once()
    files = {f["path"]: f for f in (await poll(client, rid))["files"]}
    assert files[f"{SERIES}/nope"]["state"] == "FAILED"
    assert files[f"{SERIES}/nope"]["error"] == "no such file"


async def test_requests_are_private_to_their_submitter(client: httpx.AsyncClient) -> None:
    rid = await stage(client, SMALL)
    r = await client.get(f"{API}/stage/{rid}", headers=as_(CAROL))
    assert r.status_code == 404


async def test_refusals(client: httpx.AsyncClient) -> None:
    body = {"files": [{"path": SMALL}]}
    assert (await client.post(f"{API}/stage/", json=body)).status_code == 401
    for who in (EVE, BOB):
        r = await client.post(f"{API}/stage/", json=body, headers=as_(who))
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        r = await client.post(f"{API}/release/x", json={"paths": [SMALL]}, headers=as_(who))
        assert r.status_code == 403
    r = await client.post(f"{API}/archiveinfo/", json={"paths": [SMALL]}, headers=as_(EVE))
    assert r.status_code == 403


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'{"files": []}', b'{"files": [{"nopath": 1}]}', b'{"files": "x"}'],
)
async def test_malformed_stage_bodies_are_400_problems(
    client: httpx.AsyncClient, body: bytes
) -> None:
    r = await client.post(f"{API}/stage/", content=body, headers=as_(ALICE))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 400


async def test_targeted_metadata_is_ignored_and_disk_lifetime_honoured(
    client: httpx.AsyncClient, store: PosixNearline
) -> None:
    body = {
        "files": [
            {
                "path": SMALL,
                "diskLifetime": "PT2H",
                "targetedMetadata": {"mdm-unit": {"x": 1}, "other-site": {"y": 2}},
            }
        ]
    }
    r = await client.post(f"{API}/stage", json=body, headers=as_(ALICE))
    assert r.status_code == 201
    rid = r.json()["requestId"]
    assert store._book.lifetime(rid) == 7200
    bad = {"files": [{"path": SMALL, "diskLifetime": "two hours"}]}
    assert (await client.post(f"{API}/stage", json=bad, headers=as_(ALICE))).status_code == 400


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT1H", 3600), ("P1D", 86400), ("P1DT30M", 88200), ("PT0.5S", 0.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "1H", "P1DT", "PT1X"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


async def test_too_many_paths_is_413(client: httpx.AsyncClient) -> None:
    body = {"paths": [SMALL] * 10001}
    r = await client.post(f"{API}/archiveinfo", json=body, headers=as_(ALICE))
    assert r.status_code == 413
