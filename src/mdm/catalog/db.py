"""Engines and sessions for the catalog and the identity vault (SQLite or PostgreSQL).

One ``Database`` per URL. ``Database.session(write=...)`` is the one context manager every server
and worker uses: it opens, commits (writes only), rolls back on error and translates driver errors
into ``mdm.errors``. Core catalog functions take the session and never open one (STYLE C9).

SQLite (the embedded default) runs in WAL mode with a busy timeout, foreign keys on and
case-sensitive ``LIKE`` (PS3.4 C.2.2.2.4 wildcard matching is case-sensitive except for PN, which
the QIDO compiler lowers explicitly). pysqlite's own transaction handling is switched off so that
a write session starts with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two writers
queue on the busy timeout instead of failing on lock upgrade, and staging claims are serialized.
Read sessions use a plain deferred ``BEGIN`` and never block writers (WAL).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from mdm.errors import AlreadyExists, ConfigError, Conflict, MDMError

if TYPE_CHECKING:
    from mdm.settings import CatalogSettings

logger = logging.getLogger(__name__)

_WRITE = "mdm_write"


def make_engine(url: str, *, busy_timeout: float = 30.0, pool_size: int = 10, **kw: Any) -> Engine:
    """An Engine for *url* (``sqlite:///file.db`` or ``postgresql+psycopg://...``)."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"catalog database URL is not valid: {exc}", key="database_url") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, parsed.database, busy_timeout)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        # No pre-ping (a round trip per checkout): after a server restart the first failing
        # statement invalidates the whole pool, so one request fails and the next reconnects.
        return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, **kw)
    raise ConfigError(f"unsupported catalog database {backend!r} (sqlite or postgresql)")


def _sqlite_engine(url: str, database: str | None, busy_timeout: float) -> Engine:
    memory = database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {
        # isolation_level=None: pysqlite emits no BEGIN of its own; we emit it in _begin.
        "connect_args": {
            "check_same_thread": False,
            "isolation_level": None,
            "timeout": busy_timeout,
        }
    }
    if memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each gets its own database
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """An engine plus its session factory; ``session()`` is the only way to get a Session."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout=busy_timeout, pool_size=pool_size)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self.read_engine = self.engine
        if self.engine.dialect.name == "postgresql":
            # Reads get their own autocommit pool: under READ COMMITTED every statement has its
            # own snapshot anyway, and this saves the BEGIN and ROLLBACK round trips per read.
            self.read_engine = make_engine(url, pool_size=pool_size, isolation_level="AUTOCOMMIT")
        self._read_factory = sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success for writes, else rolled back."""
        session = self._factory() if write else self._read_factory()
        try:
            if write:
                session.connection(execution_options={_WRITE: True})
            yield session
            if write:
                session.commit()
            # A read transaction ends in close() below: it rolls back without expiring what was
            # loaded, so callers may still read the objects they got.
        except MDMError:
            session.rollback()
            raise
        except sa_exc.IntegrityError as exc:
            session.rollback()
            raise AlreadyExists(f"catalog constraint violated: {_constraint(exc)}") from exc
        except sa_exc.OperationalError as exc:
            session.rollback()
            if _is_busy(exc):
                raise Conflict("the catalog database is busy; retry") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def _constraint(exc: sa_exc.IntegrityError) -> str:
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return str(name) if name else type(exc.orig).__name__


def _is_busy(exc: sa_exc.OperationalError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in ("40001", "40P01", "55P03"):  # serialization failure, deadlock, lock n/a
        return True
    code = getattr(exc.orig, "sqlite_errorname", "")
    return code in ("SQLITE_BUSY", "SQLITE_LOCKED")


class CatalogDatabases:
    """The catalog database and the vault database (the same object when no vault URL is set)."""

    def __init__(self, database_url: str, vault_database_url: str | None = None, **kw: Any) -> None:
        self.catalog = Database(database_url, **kw)
        if vault_database_url and vault_database_url != database_url:
            self.vault = Database(vault_database_url, **kw)
        else:
            self.vault = self.catalog

    @classmethod
    def from_settings(cls, cfg: CatalogSettings) -> CatalogDatabases:
        """The databases ``[catalog]`` names (``migrations.open_current`` also checks their
        schema, which every service does before it starts)."""
        return cls(cfg.database_url, cfg.vault_database_url, busy_timeout=cfg.busy_timeout_seconds)

    @property
    def separate_vault(self) -> bool:
        return self.vault is not self.catalog

    def dispose(self) -> None:
        self.catalog.dispose()
        if self.separate_vault:
            self.vault.dispose()
