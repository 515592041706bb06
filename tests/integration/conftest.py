"""Session-wide real servers shared by integration tests (each stops what it starts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL for the whole run; tests make their own databases with new_database."""
    with postgres_server() as url:
        yield url
