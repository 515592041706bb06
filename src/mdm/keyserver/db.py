"""The key server's database: SQLite (WAL) by default, PostgreSQL by URL.

Every request of a key server writes (at least its audit record), so a SQLite transaction is
opened with ``BEGIN IMMEDIATE``: two requests that both read then write can never deadlock on the
lock upgrade, they queue on ``busy_timeout`` instead (datasette and STYLE C9 do the same).
State changes commit with ``synchronous=FULL`` because an acknowledged share must survive a
power cut: the client counted that acknowledgement towards its quorum (reads: see
``Database``). On PostgreSQL the same code runs under READ COMMITTED
with explicit row locks (``SELECT ... FOR UPDATE``) where order matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mdm.errors import ConfigError
from mdm.keyserver.models import SCHEMA_VERSION, Base, SchemaInfo


def make_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    """An engine for *url* with the pragmas/options the key server relies on."""
    if not url:
        raise ConfigError("keyserver.database_url is empty", key="keyserver.database_url")
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(
                engine, "connect", lambda conn, rec: _sqlite_connect(conn, rec, synchronous)
            )
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"cannot use keyserver.database_url: {type(exc).__name__}",
            key="keyserver.database_url",
        ) from exc
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any, synchronous: str) -> None:
    # pysqlite's own transaction handling would BEGIN DEFERRED behind our back; take it over.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_schema(engine: Engine) -> None:
    """Create the tables if missing and check the schema stamp (refuse unknown versions)."""
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        row = s.get(SchemaInfo, "schema_version")
        if row is None:
            s.add(SchemaInfo(name="schema_version", value=SCHEMA_VERSION))
        elif row.value != SCHEMA_VERSION:
            raise ConfigError(
                f"key-server database has schema version {row.value}, this release knows "
                f"{SCHEMA_VERSION}: upgrade MDM before serving it",
                key="keyserver.database_url",
            )


class Database:
    """Engine + session factory; ``transaction()`` is the one way code touches the tables.

    On SQLite a second pool with ``synchronous=NORMAL`` serves transactions that change no
    key state (fetches, reads, refusals: they write only their audit record), unless
    *fsync_reads*. In WAL mode such a commit is atomic and survives a crash of the process,
    but a power cut may drop the newest of those audit records; they become durable with the
    next state-changing (fsynced) commit or checkpoint. This saves one fsync per fetch.
    """

    def __init__(self, url: str, *, create: bool = True, fsync_reads: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url)
        if create:
            create_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine: Engine | None = None
        self._read_sessions = self._sessions
        if self.is_sqlite and not fsync_reads:
            self._read_engine = make_engine(url, synchronous="NORMAL")
            self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Session]:
        """One short write transaction: commit on success, roll back on any exception.

        ``durable=False`` for transactions that change no key state (see the class doc).
        """
        sessions = self._sessions if durable else self._read_sessions
        with sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()
