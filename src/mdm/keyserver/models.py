"""Tables of one key server: shares (wrapped), tombstones, the audit chain and its head.

Every server has its own database; nothing here is shared between servers. A share is never
stored in clear: ``wrapped`` is AES-256-GCM under the server master key with the key id and
slot as associated data (``mdm.keyserver.masterkey``), so a stolen disk or backup, or a row
copied onto another key id, yields nothing usable.

The schema is created with ``create_all`` and stamped with ``SCHEMA_VERSION`` in ``schema_info``
(see docs/keyserver-protocol.md, "Storage"): a server refuses a database stamped with a version
it does not know instead of guessing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = "1"


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class KeyRecord(Base):
    """One key id on this server: its share, integrity data, owner and current ACL version."""

    __tablename__ = "key_shares"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # nonce(12) || AES-GCM(share)
    share_hashes: Mapped[str] = mapped_column(Text)  # JSON list of n hex SHA-256 (HV)
    k: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    kcv: Mapped[str] = mapped_column(String(64))  # key check value, hex
    owner: Mapped[str] = mapped_column(String(1024))
    acl_version: Mapped[int] = mapped_column(Integer)
    acl_prev: Mapped[str] = mapped_column(String(64))
    acl_digest: Mapped[str] = mapped_column(String(64))
    acl_entries: Mapped[str] = mapped_column(Text)  # canonical JSON {principal: [rights]}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(1024))


class Tombstone(Base):
    """A deleted key id: it is never accepted again, so a restored backup cannot revive it."""

    __tablename__ = "key_tombstones"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_by: Mapped[str] = mapped_column(String(1024))


class AuditRecord(Base):
    """One audited request. ``mac`` chains it to the previous record (``mdm.keyserver.audit``)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    dn: Mapped[str] = mapped_column(String(1024))
    fqans: Mapped[str] = mapped_column(Text)
    client: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    prev: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last record's number and MAC: removing the newest records is detected too."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(64))
