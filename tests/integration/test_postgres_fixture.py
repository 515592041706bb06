from __future__ import annotations

import psycopg

from tests.helpers.postgres import new_database


def test_real_postgres_answers(postgres_url: str) -> None:
    url = new_database(postgres_url, "fixture_check")
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        assert version is not None
        assert int(version[0].split(".")[0]) >= 13
        addr = conn.execute("SELECT inet_server_addr()::text").fetchone()
        assert addr is not None
        assert addr[0].startswith("127.0.0.1")
