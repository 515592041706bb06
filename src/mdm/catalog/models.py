"""SQLAlchemy 2 models of the catalog: file catalog, metadata catalog, staging queue, vault.

Two ``MetaData`` trees on purpose: ``Base`` is the catalog database (file catalog, de-identified
metadata, ACLs, staging queue) and ``VaultBase`` is the identity vault (original identifiers,
the pseudonym map and the hash-chained audit log). The vault may live in another database with
other credentials (``CatalogSettings.vault_database_url``), so that a dump of the catalog alone
never yields a patient's identity. No foreign key crosses the two trees.

States are Enums stored as short strings (no PostgreSQL native ENUM, so migrations stay simple).
Timestamps are timezone-aware UTC on both engines (``UTCDateTime``). DICOM JSON (PS3.18 Annex F)
of the de-identified header lives in ``JSONType``: JSONB on PostgreSQL, JSON text on SQLite.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out; SQLite stores them naive, so reattach UTC on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; use datetime.now(UTC)")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class ReplicaState(enum.StrEnum):
    """Replica life cycle: NEARLINE (in the PACS) -> STAGING -> ONLINE (pinned) | FAILED."""

    NEARLINE = "NEARLINE"
    STAGING = "STAGING"
    ONLINE = "ONLINE"
    FAILED = "FAILED"


class EntryKind(enum.StrEnum):
    DIRECTORY = "directory"
    FILE = "file"


class Right(enum.StrEnum):
    """Catalog rights; granted on /dicom, a study or a series directory, inherited downward."""

    LIST = "list"  # see the entry, its stat and its de-identified metadata (QIDO)
    READ = "read"  # replica URLs: download or stage the ciphertext (level 1)
    WRITE = "write"  # register files and replicas below the directory
    ADMIN = "admin"  # change the ACL
    IDENTITY = "identity"  # original identity in the vault (level 3), audited
    # Level 2 as recorded by the catalog: new keys of the study get key ``read`` for these
    # principals (the recall worker); the key servers enforce it, each on its own ACL.
    DECRYPT = "decrypt"


class StageState(enum.StrEnum):
    """Per-file staging states, the vocabulary of the WLCG Tape REST API v1."""

    SUBMITTED = "SUBMITTED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class VaultBase(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


# --------------------------------------------------------------------------- file catalog


class Entry(Base):
    """An LFN: ``/dicom`` (root), ``/dicom/<study>``, ``/dicom/<study>/<series>`` or a file."""

    __tablename__ = "fc_entry"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    path: Mapped[str] = mapped_column(String(255), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("fc_entry.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[EntryKind] = mapped_column(_enum(EntryKind))
    owner: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    adler32: Mapped[str | None] = mapped_column(String(8))
    sha256: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    replicas: Mapped[list[Replica]] = relationship(
        back_populates="entry", cascade="all, delete-orphan", order_by="Replica.id"
    )


class Replica(Base):
    """A copy of a file on a storage element; checksums are those of the stored ciphertext."""

    __tablename__ = "fc_replica"
    __table_args__ = (UniqueConstraint("entry_id", "se"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("fc_entry.id", ondelete="CASCADE"))
    se: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[ReplicaState] = mapped_column(_enum(ReplicaState))
    pinned_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    adler32: Mapped[str | None] = mapped_column(String(8))
    sha256: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    entry: Mapped[Entry] = relationship(back_populates="replicas")


class AclGrant(Base):
    """One right for one principal (``dn:`` or ``fqan:`` entry) on one directory path."""

    __tablename__ = "fc_acl"
    __table_args__ = (
        UniqueConstraint("path", "principal", "right"),
        Index("ix_fc_acl_right_principal", "right", "principal"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    path: Mapped[str] = mapped_column(String(255))
    principal: Mapped[str] = mapped_column(String(512))
    right: Mapped[Right] = mapped_column(_enum(Right))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# ----------------------------------------------------------------------- metadata catalog


class Patient(Base):
    """Patient level, de-identified: ``patient_id`` and ``patient_name`` are pseudonyms."""

    __tablename__ = "md_patient"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_name: Mapped[str | None] = mapped_column(String(320), index=True)
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class Study(Base):
    __tablename__ = "md_study"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("md_patient.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    study_id: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String(64))
    referring_physician_name: Mapped[str | None] = mapped_column(String(320))
    modalities_in_study: Mapped[str | None] = mapped_column(String(128))
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    patient: Mapped[Patient] = relationship()


class Series(Base):
    __tablename__ = "md_series"
    __table_args__ = (Index("ix_md_series_modality_study", "modality", "study_fk"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("md_study.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(64))
    body_part_examined: Mapped[str | None] = mapped_column(String(16))
    pps_start_date: Mapped[str | None] = mapped_column(String(8))
    pps_start_time: Mapped[str | None] = mapped_column(String(16))
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    study: Mapped[Study] = relationship()


class Instance(Base):
    __tablename__ = "md_instance"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("md_series.id"), index=True)
    entry_fk: Mapped[int] = mapped_column(ForeignKey("fc_entry.id"), unique=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    series: Mapped[Series] = relationship()


# ------------------------------------------------------------------------- staging queue


class StageRequest(Base):
    """A bulk staging request (WLCG Tape REST API ``POST /stage``), one row per request."""

    __tablename__ = "st_request"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    caller: Mapped[str] = mapped_column(Text)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Seconds its files stay pinned once COMPLETED (Tape REST ``diskLifetime``); None: the
    #: storage element's ``pin_lifetime_seconds``.
    disk_lifetime: Mapped[float | None] = mapped_column(Float)
    files: Mapped[list[StageFile]] = relationship(
        back_populates="request", order_by="StageFile.id", cascade="all, delete-orphan"
    )


class StageFile(Base):
    """One file of a request; workers claim these, grouped by series, under a lease."""

    __tablename__ = "st_file"
    __table_args__ = (
        Index("ix_st_file_state_series", "state", "series_uid"),
        Index("ix_st_file_path", "path"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("st_request.id"), index=True)
    path: Mapped[str] = mapped_column(String(255))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    state: Mapped[StageState] = mapped_column(_enum(StageState))
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_expires: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: When its request released it (``mdm.catalog.pins``): a COMPLETED file pins the replica
    #: until then, or until its lifetime ends.
    released: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    request: Mapped[StageRequest] = relationship(back_populates="files")


# --------------------------------------------------------------------------- identity vault


class VaultPatient(VaultBase):
    """Original patient identity, keyed by the pseudonymous PatientID of the catalog."""

    __tablename__ = "id_patient"
    pseudo_patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    patient_name: Mapped[str | None] = mapped_column(String(320))
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    issuer_of_patient_id: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class VaultStudy(VaultBase):
    __tablename__ = "id_study"
    pseudo_study_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    pseudo_patient_id: Mapped[str] = mapped_column(
        ForeignKey("id_patient.pseudo_patient_id"), index=True
    )
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    pseudo_accession_number: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class UidMap(VaultBase):
    """Pseudonymous UID -> original UID for every study, series and instance."""

    __tablename__ = "id_uid_map"
    pseudo_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    original_uid: Mapped[str] = mapped_column(String(64), unique=True)
    level: Mapped[str] = mapped_column(String(8))
    pseudo_study_uid: Mapped[str] = mapped_column(String(64), index=True)


class AuditEvent(VaultBase):
    """Append-only, hash-chained: ``hash = sha256(prev_hash || canonical record)``."""

    __tablename__ = "audit_event"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
