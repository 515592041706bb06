"""The one Settings object: defaults < TOML file < ``MDM_<SECTION>__<KEY>`` environment.

Built once at the edge (the CLI, a test) and passed down; nothing below the CLI reads
``os.environ``. Sections are frozen dataclasses so a server cannot change its configuration
under a running request. A missing or malformed value raises ``ConfigError`` naming the key and
where it came from. Secrets are ``Secret`` values whose ``repr``/``str`` never show the content.

Each part of MDM owns one section; add fields there, with a default that is safe (deny, loopback).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm.errors import ConfigError

ENV_PREFIX = "MDM_"


class Secret:
    """A secret value (password, master key path content, site secret) that never prints."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        if not isinstance(other, Secret):
            return NotImplemented
        a = self._value.encode() if isinstance(self._value, str) else self._value
        b = other._value.encode() if isinstance(other._value, str) else other._value
        return hmac.compare_digest(a, b)

    def __hash__(self) -> int:
        return hash(Secret)

    def reveal(self) -> str | bytes:
        """The secret itself: call it only where it is used, never to log or format."""
        return self._value

    def reveal_bytes(self) -> bytes:
        v = self._value
        return v.encode() if isinstance(v, str) else v


@dataclass(frozen=True)
class TlsSettings:
    """X.509 identity of this process and what it trusts (IGTF-style directories)."""

    cert: Path | None = None  # PEM certificate (or proxy, which then also holds the key)
    key: Path | None = None
    ca_dir: Path | None = None  # hashed CA directory, like /etc/grid-security/certificates
    vomsdir: Path | None = None  # <vo>/<host>.lsc files, like /etc/grid-security/vomsdir
    proxy: Path | None = None  # client side: an RFC 3820 proxy file (cert+key+chain)


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "WARNING"
    audit_file: Path | None = None


@dataclass(frozen=True)
class KeyStoreSettings:
    """The client's view of the n key servers (share x = position in the list + 1)."""

    servers: tuple[str, ...] = ()
    threshold: int = 3
    write_quorum: int | None = None  # None: k + 1 acknowledgements to register
    timeout: float = 10.0
    register_batch: int = 100  # keys per POST /v1/register; <= the servers' max_register_keys


@dataclass(frozen=True)
class KeyServerSettings:
    """One key server; every server runs the same code and differs only here."""

    index: int = 1  # the Shamir x of the shares this server holds (1..n)
    database_url: str = "sqlite:///keyserver.db"
    master_key_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    admin_fqans: tuple[str, ...] = ()
    admin_dns: tuple[str, ...] = ()
    creator_fqans: tuple[str, ...] = ()
    creator_dns: tuple[str, ...] = ()
    rate_limit_per_minute: int = 6000
    max_request_bytes: int = 65536
    fsync_reads: bool = False  # SQLite: also fsync the audit record of every fetch/read
    max_register_keys: int = 100  # keys per POST /v1/register (one transaction, one fsync)


@dataclass(frozen=True)
class CatalogSettings:
    url: str = ""  # client side: https://host:port of the catalog service
    database_url: str = "sqlite:///catalog.db"
    vault_database_url: str | None = None  # None: the identity vault shares database_url
    host: str = "127.0.0.1"
    port: int = 0
    admin_dns: tuple[str, ...] = ()
    admin_fqans: tuple[str, ...] = ()
    service_dns: tuple[str, ...] = ()  # recall workers: may resolve pseudonymous -> original UIDs
    service_fqans: tuple[str, ...] = ()
    qido_max_results: int = 1000  # a QIDO answer never holds more (Warning 299 says so)
    busy_timeout_seconds: float = 30.0  # SQLite: wait this long for the write lock
    claim_lease_seconds: float = 300.0  # a staging claim expires unless its worker renews it
    claim_max_attempts: int = 3  # claims of one file before it FAILS (dead/hung workers)
    auto_upgrade: bool = False  # create/migrate the schema when the service starts


@dataclass(frozen=True)
class AnonymizeSettings:
    secret_file: Path | None = None  # the site secret: keys pseudonyms, UIDs and date shifts
    options: tuple[str, ...] = ()
    allow_burned_in_sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PacsSettings:
    aet: str = "ORTHANC"
    host: str = "127.0.0.1"
    port: int = 4242
    method: str = "c-get"  # or "c-move"
    engine: str = "pynetdicom"  # or "dcmtk": C-GET received by dcmtk's getscu (docs/pacs.md)
    max_associations: int = 4
    move_destination: str = ""  # AE title the PACS knows our storage SCP by; "": dicom.ae_title
    acse_timeout: float = 30.0  # association set-up and release
    dimse_timeout: float = 60.0  # between two DIMSE messages (a C-MOVE sends one per instance)
    network_timeout: float = 60.0  # idle socket
    max_pdu: int = 0  # largest PDU we accept; 0 = unlimited (+10-15% C-GET throughput)


@dataclass(frozen=True)
class DicomSettings:
    ae_title: str = "MDM"
    host: str = "127.0.0.1"
    port: int = 0  # our storage SCP (C-MOVE destination, receiver)
    pacs: Mapping[str, PacsSettings] = field(default_factory=dict)
    getscu: str = "getscu"  # the dcmtk program of engine = "dcmtk"
    spool_dir: str = ""  # engine "dcmtk": where originals land briefly; "": /dev/shm or temp dir


@dataclass(frozen=True)
class StorageSettings:
    url: str = ""  # client side: https://host:port of the storage element
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "MDM-SE"
    cache_dir: Path = Path("cache")
    cache_limit_bytes: int = 0  # 0: unlimited
    pin_lifetime_seconds: int = 3600
    archive_dir: Path | None = None  # catalog-less SE: this directory is the "tape"
    acl_file: Path | None = None  # catalog-less SE: TOML [[grant]] tables (mdm.storage.grants)
    release_grace_seconds: int = 0  # a copy stays this long after its last pin is released
    retry_after_seconds: int = 30  # Retry-After sent with 503 for a NEARLINE file
    max_bulk_paths: int = 10000  # most paths in one Tape REST request
    max_ranges: int = 200  # most ranges in one GET Range (more: whole file); <2: no multipart
    direct_io: bool = True  # recall worker writes cache files with O_DIRECT (mdm.storage.direct)
    recipe_dir: Path | None = None  # recall recipes (docs/recall.md); None: <cache_dir>/../recipes


@dataclass(frozen=True)
class Settings:
    tls: TlsSettings = field(default_factory=TlsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    keystore: KeyStoreSettings = field(default_factory=KeyStoreSettings)
    keyserver: KeyServerSettings = field(default_factory=KeyServerSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    anonymize: AnonymizeSettings = field(default_factory=AnonymizeSettings)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Settings:
        """Defaults < TOML *path* < ``MDM_SECTION__KEY`` in *environ* < *overrides*.

        ``environ`` defaults to ``os.environ``; this is the one place MDM reads it. The file
        may also be named by ``MDM_SETTINGS``. Relative paths in a file are taken relative to the
        file's own directory, so a site directory can be moved as a whole.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        if path is None and env.get(ENV_PREFIX + "SETTINGS"):
            path = env[ENV_PREFIX + "SETTINGS"]
        base: Path | None = None
        if path is not None:
            p = Path(path)
            try:
                with p.open("rb") as fh:
                    data = tomllib.load(fh)
            except FileNotFoundError as exc:
                raise ConfigError(f"settings file {p} does not exist", key="settings") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"settings file {p} is not valid TOML: {exc}") from exc
            base = p.resolve().parent
        for name, value in env.items():
            if not name.startswith(ENV_PREFIX) or "__" not in name:
                continue
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            data.setdefault(section, {})
            if isinstance(data[section], dict):
                data[section][key] = value
        for section, values in (overrides or {}).items():
            data.setdefault(section, {}).update(values)
        return _build(cls, data, "", base)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Path | None = None) -> Settings:
        return _build(cls, data, "", base)


def _build(cls: type[Any], data: Mapping[str, Any], where: str, base: Path | None) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table, not {type(data).__name__}", key=where)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        label = f"[{where}]" if where else "top level"
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {label}", key=unknown[0])
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            key = f"{where}.{f.name}" if where else f.name
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], key, base)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, base: Path | None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(inner[0], value, key, base)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key, base)
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"setting {key} must be a table", key=key)
        return {str(k): _coerce(args[1], v, f"{key}.{k}", base) for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"setting {key} must be a list", key=key)
        return tuple(_coerce(args[0], v, key, base) for v in value)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
        if tp is Path:
            p = Path(str(value)).expanduser()
            return base / p if base is not None and not p.is_absolute() else p
        if tp is Secret:
            return value if isinstance(value, Secret) else Secret(str(value))
    except (TypeError, ValueError) as exc:
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"setting {key} must be {name}, got {value!r}", key=key) from exc
    return value
