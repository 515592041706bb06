"""Per-request pins (``mdm.catalog.pins``) on a real PostgreSQL, where ``repin`` locks the
replica rows: the same test as on SQLite (tests/unit/catalog/test_pins.py)."""

from __future__ import annotations

import pytest

from tests.helpers.postgres import new_database
from tests.unit.catalog.helpers import dbs
from tests.unit.catalog.test_pins import (
    test_a_file_stays_pinned_until_the_last_request_releases_it,
)

pytestmark = pytest.mark.postgres

__all__ = ["dbs", "test_a_file_stays_pinned_until_the_last_request_releases_it"]


@pytest.fixture(scope="module")
def catalog_url(postgres_url: str) -> str:
    return new_database(postgres_url, "catalog_pins")
