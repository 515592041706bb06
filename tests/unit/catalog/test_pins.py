"""Per-request pins (``mdm.catalog.pins``) on a real SQLite catalog; the same tests run on
PostgreSQL (tests/integration/test_pins_postgres.py), where ``repin`` locks the replicas."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from mdm.catalog import access, files, pins, staging
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.files import FileInfo
from mdm.catalog.models import Replica, ReplicaState, utcnow
from mdm.catalog.registration import Registration, register
from tests.unit.catalog.helpers import ADMIN, ALICE, BOB, caller, dataset, dbs

__all__ = ["dbs"]

STUDY, SERIES, SOP = "2.25.83", "2.25.831", "2.25.8311"
PATH = f"/dicom/{STUDY}/{SERIES}/{SOP}"
SE = "se-pins"
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    return f"sqlite:///{tmp_path_factory.mktemp('pins')}/catalog.db"


def pinned_until(dbs: CatalogDatabases) -> dt.datetime:
    with dbs.catalog.session() as s:
        (replica,) = [r for r in files.list_replicas(s, caller(ADMIN), PATH) if r.se == SE]
        assert isinstance(replica, Replica)
        assert replica.pinned_until is not None
        return replica.pinned_until


def online(s: Session) -> None:
    """This SE's replica ONLINE and pinned for an hour, as the worker records a recall."""
    files.add_replica(
        s, caller(ADMIN), PATH, se=SE, url=PATH, state=ReplicaState.ONLINE,
        pinned_until=utcnow() + HOUR, info=FileInfo(10, "0" * 8, "a" * 64),
    )  # fmt: skip


def test_a_file_stays_pinned_until_the_last_request_releases_it(dbs: CatalogDatabases) -> None:
    with dbs.catalog.session(write=True) as s:
        register(
            s, s, caller(ADMIN), Registration.from_json({"dataset": dataset(STUDY, SERIES, SOP)})
        )
        access.set_acl(
            s,
            f"/dicom/{STUDY}",
            {f"dn:{ALICE.dn}": ["list", "read"], f"dn:{BOB.dn}": ["list", "read"]},
        )
        online(s)
        alice = staging.submit(s, caller(ALICE), [PATH]).id  # ONLINE: COMPLETED at once
        staging.submit(s, caller(BOB), [PATH], disk_lifetime=3 * 3600)
    with dbs.catalog.session(write=True) as s:
        assert pins.release(s, caller(BOB), alice, [PATH]) == 1  # not his request: his own pin
        assert pins.release(s, caller(ALICE), alice, [PATH]) == 1
        assert pins.release(s, caller(ALICE), "gfal2-placeholder-id", [PATH]) == 0
        pins.repin(s, SE, [PATH], HOUR, dt.timedelta(0))
    assert pinned_until(dbs) <= utcnow() + dt.timedelta(seconds=5), "no live pin: grace only"
    with dbs.catalog.session(write=True) as s:  # recalled again (the worker pins it anew)
        online(s)
        staging.submit(s, caller(BOB), [PATH], disk_lifetime=3 * 3600)
        staging.submit(s, caller(ALICE), [PATH])
        assert pins.release(s, caller(ALICE), "gfal2-placeholder-id", [PATH]) == 1
        pins.repin(s, SE, [PATH], HOUR, dt.timedelta(0))
    assert pinned_until(dbs) > utcnow() + 2 * HOUR, "Bob's three hours are left"
    with dbs.catalog.session(write=True) as s:
        pins.repin(s, SE, [PATH], HOUR, dt.timedelta(days=1))
    assert pinned_until(dbs) > utcnow() + 20 * HOUR, "a grace longer than the pins"
