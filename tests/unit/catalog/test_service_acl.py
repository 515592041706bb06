"""The catalog service in-process: the client library against ``create_app`` over ASGI.

The ACL matrix: for each right (list, read, identity, and write/admin/service) and each endpoint
that needs it, one caller who holds it succeeds and one who does not is refused (or, for
searches, sees nothing). Then AMGA's rule (no inference through filters), problem+json,
dicom+json, the PS3.18 warnings and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mdm.acl import Identity
from mdm.catalog.db import CatalogDatabases
from mdm.client import CatalogClient
from mdm.errors import (
    AuthenticationRequired,
    Conflict,
    FileNotFound,
    MDMError,
    PermissionDenied,
    UsageError,
)
from tests.unit.catalog.helpers import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    EVE,
    S1,
    S1_MR,
    S2,
    S2_CT,
    SAM,
    SERVICE,
    SyncASGITransport,
    app,
    dataset,
    dbs,
    identity_headers,
    original,
)

__all__ = ["app", "dbs"]
FILE = f"/dicom/{S1}/{S1_MR}/2.25.3011"


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('svc')}/catalog.db"


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[Callable[[Identity | None], CatalogClient]]:
    made: list[CatalogClient] = []

    def make(who: Identity | None) -> CatalogClient:
        c = CatalogClient(
            "http://catalog", transport=SyncASGITransport(app), headers=identity_headers(who)
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _uids(matches: list[dict[str, Any]], tag: str) -> list[str]:
    return sorted(m[tag]["Value"][0] for m in matches)


_counter = iter(range(100, 10_000))


def _new_instance() -> dict[str, Any]:
    n = next(_counter)
    study, series, sop = "2.25.8100", "2.25.8101", f"2.25.8102{n}"
    return {"dataset": dataset(study, series, sop), "original": original(study, series, sop)}


# (name, action, allowed caller, denied caller, what the denied caller gets)
MATRIX: list[tuple[str, Callable[[CatalogClient], Any], Identity, Identity, Any]] = [
    ("list:qido-studies", lambda c: _uids(c.search_studies(), "0020000D"), ALICE, EVE, []),
    ("list:qido-series", lambda c: c.search_series(S1), ALICE, EVE, []),
    ("list:qido-instances", lambda c: c.search_instances(S1, S1_MR), ALICE, EVE, []),
    (
        "list:qido-all-instances",
        lambda c: c.search_instances(params={"PatientID": "PSN-001"}),
        ALICE,
        EVE,
        [],
    ),
    ("list:ls", lambda c: c.ls(f"/dicom/{S1}"), ALICE, EVE, FileNotFound),
    ("list:stat", lambda c: c.stat(FILE), ALICE, EVE, FileNotFound),
    ("list:acl-get", lambda c: c.get_acl(f"/dicom/{S1}"), ALICE, EVE, FileNotFound),
    ("list:acl-get-root", lambda c: c.get_acl("/dicom"), BOB, ALICE, FileNotFound),
    ("read:replicas", lambda c: c.replicas(FILE), BOB, ALICE, PermissionDenied),
    ("read:stage", lambda c: c.stage([FILE]), BOB, ALICE, PermissionDenied),
    (
        "identity:study",
        lambda c: c.study_identity(S1, reason="audit test"),
        CAROL,
        BOB,
        PermissionDenied,
    ),
    ("identity:find", lambda c: c.find_studies(patient_id="HOSP-42", reason="t"), CAROL, BOB, []),
    ("identity:uids", lambda c: c.original_uids([S1]), SERVICE, BOB, PermissionDenied),
    ("write:register", lambda c: c.register(_new_instance()), SERVICE, BOB, PermissionDenied),
    (
        "admin:acl-set",
        lambda c: c.set_acl(f"/dicom/{S2}", {f"dn:{EVE.dn}": []}),
        ADMIN,
        ALICE,
        PermissionDenied,
    ),
    ("service:claim", lambda c: c.claim("w", limit=1), SERVICE, BOB, PermissionDenied),
    ("admin:audit", lambda c: c.verify_audit(), ADMIN, SERVICE, PermissionDenied),
]


@pytest.mark.parametrize(("action", "allowed", "denied", "outcome"),
                         [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])  # fmt: skip
def test_acl_matrix(
    client: Callable[[Identity | None], CatalogClient],
    action: Callable[[CatalogClient], Any],
    allowed: Identity,
    denied: Identity,
    outcome: Any,
) -> None:
    granted = action(client(allowed))
    assert granted not in ([], None)
    if isinstance(outcome, type) and issubclass(outcome, MDMError):
        with pytest.raises(outcome):
            action(client(denied))
    else:
        assert action(client(denied)) == outcome
    with pytest.raises(AuthenticationRequired):  # and nobody gets in without a certificate
        action(client(None))


def test_search_results_are_scoped_by_list(
    client: Callable[[Identity | None], CatalogClient],
) -> None:
    assert _uids(client(ALICE).search_studies(), "0020000D") == [S1]
    # list on /dicom through his VOMS group
    assert {S1, S2, "2.25.1003", "2.25.1004"} <= set(
        _uids(client(BOB).search_studies(), "0020000D")
    )
    assert client(SAM).search_studies() == []  # a series grant shows no study
    assert _uids(client(SAM).search_series(params={"Modality": "CT"}), "0020000E") == [S2_CT]


def test_filtering_on_what_you_may_not_read_is_refused(
    client: Callable[[Identity | None], CatalogClient],
) -> None:
    # AMGA: Sam may list one series of S2 but not S2 itself; filtering series by study
    # attributes would let him learn them, so the query is refused rather than answered.
    sam = client(SAM)
    for params in (
        {"StudyDescription": "Chest*"},
        {"PatientID": "PSN-002"},
        {"includefield": "StudyDate"},
        {"includefield": "00080080"},  # stored JSON may hold study-level elements
    ):
        with pytest.raises(PermissionDenied):
            sam.search_series(params=params)
    with pytest.raises(PermissionDenied):
        sam.search_instances(params={"PatientName": "Roe*"})
    assert sam.search_series(S2, params={"Modality": "CT"})[0]["00080060"]["Value"] == ["CT"]
    # a caller who may list the studies may filter on them
    assert _uids(client(BOB).search_series(params={"StudyDescription": "Chest*"}), "0020000E") == [
        S2_CT, "2.25.2022",
    ]  # fmt: skip


def test_staging_on_behalf_of_a_user(client: Callable[[Identity | None], CatalogClient]) -> None:
    se = client(SERVICE)
    request = se.stage([FILE], on_behalf_of={"dn": BOB.dn, "fqans": list(BOB.fqans)})
    assert request["caller"] == BOB.dn
    assert client(BOB).staging_request(request["id"])["files"][0]["path"] == FILE
    with pytest.raises(PermissionDenied):  # Alice may list, not read
        se.stage([FILE], on_behalf_of={"dn": ALICE.dn})
    with pytest.raises(PermissionDenied):  # only services act for others
        client(BOB).stage([FILE], on_behalf_of={"dn": ADMIN.dn})
    assert se.check_access(FILE, "read", BOB.dn, BOB.fqans)
    assert not se.check_access(FILE, "read", ALICE.dn)


def test_registration_is_idempotent_over_the_wire(
    client: Callable[[Identity | None], CatalogClient],
) -> None:
    body = _new_instance()
    first = client(SERVICE).register(body)
    again = client(SERVICE).register(body)
    assert first["created"] is True
    assert again["created"] is False
    assert again["entry"]["guid"] == first["entry"]["guid"]


def test_batch_registration_is_all_or_nothing(
    client: Callable[[Identity | None], CatalogClient], dbs: CatalogDatabases
) -> None:
    batch = [_new_instance() for _ in range(5)]
    results = client(SERVICE).register_many(batch)
    assert [r["created"] for r in results] == [True] * 5
    again = client(SERVICE).register_many([*batch[:2], _new_instance()])
    assert [r["created"] for r in again] == [False, False, True]
    bad = _new_instance()
    bad["original"]["PatientID"] = "SOMEONE-ELSE"  # same pseudonym, other patient: refused
    fresh = _new_instance()
    with pytest.raises(Conflict):
        client(SERVICE).register_many([fresh, bad])
    with pytest.raises(FileNotFound):  # the whole batch was rolled back
        client(SERVICE).stat(
            "/dicom/2.25.8100/2.25.8101/" + fresh["dataset"]["00080018"]["Value"][0]
        )


def test_wire_formats(app: Any) -> None:
    transport = SyncASGITransport(app)
    with httpx.Client(
        base_url="http://catalog", transport=transport, headers=identity_headers(BOB)
    ) as http:
        r = http.get("/studies", params={"PatientName": "ROE*", "fuzzymatching": "true"})
        assert r.headers["content-type"] == "application/dicom+json"
        assert "fuzzymatching parameter is not supported" in r.headers["warning"]
        assert _uids(r.json(), "0020000D") == [S2]
        r = http.get("/studies", params={"StudyInstanceUID": "1.2.*"})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "UsageError"
        doc = http.get("/openapi.json").json()
        assert doc["openapi"].startswith("3.")
        assert "/studies/{study}/series" in doc["paths"]
        assert "identity" in doc["paths"]["/identity/studies/{study}"]["get"]["description"]


def test_client_maps_errors_and_network_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            raise httpx.ConnectError("refused", request=request)
        body = {"type": "UsageError", "title": "UsageError", "status": 400, "detail": "no"}
        return httpx.Response(400, json=body)

    with CatalogClient("http://x", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(UsageError, match="no"):
            c.search_studies()
        from mdm.errors import TransportError

        with pytest.raises(TransportError):
            c._json("GET", "/boom")


def test_refused_identity_requests_are_audited(
    client: Callable[[Identity | None], CatalogClient], dbs: CatalogDatabases
) -> None:
    from mdm.catalog import audit

    with pytest.raises(PermissionDenied):
        client(EVE).study_identity(S2, reason="fishing")
    with dbs.vault.session() as s:
        last = audit.events(s, after=audit.verify(s).records - 1)[0]
    assert (last.actor, last.action, last.target, last.outcome) == (
        EVE.dn, "identity.study", S2, "denied",
    )  # fmt: skip
