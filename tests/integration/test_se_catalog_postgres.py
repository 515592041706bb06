"""The catalog-backed storage element on a real PostgreSQL: staging through the queue, pins
per request (``stage`` and ``release`` lock the replica rows there) and eviction, the same
tests as on SQLite (tests/unit/workers/test_catalog_storage.py)."""

from __future__ import annotations

import pytest

from mdm.settings import Settings
from tests.helpers.postgres import new_database
from tests.unit.workers.test_catalog_storage import (
    backend,
    dbs,
    test_a_release_takes_a_file_from_nobody_else_who_staged_it,
    test_online_files_are_served_with_checksums_then_released_and_evicted,
    test_staging_goes_through_the_catalog_queue,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "backend",
    "dbs",
    "test_a_release_takes_a_file_from_nobody_else_who_staged_it",
    "test_online_files_are_served_with_checksums_then_released_and_evicted",
    "test_staging_goes_through_the_catalog_queue",
]


@pytest.fixture(scope="module")
def settings(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("catalog-se-pg")
    return Settings.from_mapping(
        {
            "catalog": {"database_url": new_database(postgres_url, "catalog_se")},
            "storage": {"name": "se-test", "cache_dir": str(root / "cache")},
        }
    )
