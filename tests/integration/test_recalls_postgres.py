"""``catalog.recalls`` (batch recording with bulk statements) on a real PostgreSQL: the same
tests as on SQLite (tests/unit/catalog/test_recalls.py)."""

from __future__ import annotations

import pytest

from tests.helpers.postgres import new_database
from tests.unit.catalog.helpers import dbs
from tests.unit.catalog.test_recalls import (
    registered,
    test_a_batch_becomes_online_failed_or_lost_in_one_call,
    test_a_recalled_file_is_pinned_for_the_longest_lifetime_its_requests_asked,
    test_changed_checksums_fail_and_a_failure_never_hides_an_online_copy,
    test_only_services_record,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "dbs",
    "registered",
    "test_a_batch_becomes_online_failed_or_lost_in_one_call",
    "test_a_recalled_file_is_pinned_for_the_longest_lifetime_its_requests_asked",
    "test_changed_checksums_fail_and_a_failure_never_hides_an_online_copy",
    "test_only_services_record",
]


@pytest.fixture(scope="module")
def catalog_url(postgres_url: str) -> str:
    return new_database(postgres_url, "catalog_recalls")
