"""Path ACLs for a storage backend that has no catalog: who may list or read below a directory.

A grant names a directory (or file) and, per right, the ``mdm.acl`` entries that hold it::

    # acl.toml
    [[grant]]
    path = "/dicom"
    list = ["fqan:/mdm"]
    read = ["fqan:/mdm/radiology", "dn:/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor"]

    [[grant]]
    path = "/dicom/2.25.1234"        # a study closed to everybody but one person
    list = ["dn:/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor"]
    read = []

The *nearest* grant that mentions a right decides it (rights are inherited downward and a
deeper grant replaces, not extends, the one above). That is NOT the catalog's rule, where the
rights on a path are the union of the grants above it (docs/storage-element.md,
"Authorization", says why both stay as they are). Above, Bob of
``/mdm/radiology`` reads ``/dicom/2.25.99/...`` but not ``/dicom/2.25.1234/...``. No grant at
all means no access (default deny). The same object serves the catalog-less ``mdm serve se``
and the unit tests; the catalog-backed backend asks the catalog instead.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mdm.acl import AclEntry, Identity
from mdm.errors import ConfigError, MDMError
from mdm.storage.backend import Right, ancestors, normalize_lfn


@dataclass(frozen=True)
class Grants:
    """Per-path ACL entries for each ``Right`` (see the module docstring)."""

    rules: Mapping[str, Mapping[Right, tuple[AclEntry, ...]]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, Iterable[str]]]) -> Grants:
        """``{"/dicom": {"list": ["fqan:/mdm"], "read": [...]}}`` -> ``Grants``."""
        rules: dict[str, dict[Right, tuple[AclEntry, ...]]] = {}
        for path, rights in data.items():
            try:
                lfn = normalize_lfn(path)
                parsed: dict[Right, tuple[AclEntry, ...]] = {}
                for name, entries in rights.items():
                    if isinstance(entries, str):
                        raise ConfigError(f"grant {path}: {name} must be a list of ACL entries")
                    parsed[Right(name)] = tuple(AclEntry.parse(e) for e in entries)
            except ConfigError:
                raise
            except ValueError as exc:  # unknown right name, bad entry, bad path
                if isinstance(exc, MDMError):
                    raise ConfigError(f"grant {path!r}: {exc.message}", key=path) from exc
                raise ConfigError(f"grant {path!r}: unknown right ({exc})", key=path) from exc
            rules.setdefault(lfn, {}).update(parsed)
        return cls(rules)

    @classmethod
    def load(cls, path: Path) -> Grants:
        """Read a TOML file of ``[[grant]]`` tables (``path`` plus ``list``/``read`` lists)."""
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"ACL file {path} does not exist", key="storage.acl_file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"ACL file {path} is not valid TOML: {exc}") from exc
        tables = doc.get("grant", [])
        if not isinstance(tables, list):
            raise ConfigError(f"ACL file {path}: 'grant' must be an array of tables ([[grant]])")
        data: dict[str, dict[str, Sequence[str]]] = {}
        for table in tables:
            if not isinstance(table, dict) or not isinstance(table.get("path"), str):
                raise ConfigError(f"ACL file {path}: every [[grant]] needs a path = '...'")
            rights = {k: v for k, v in table.items() if k != "path"}
            data.setdefault(table["path"], {}).update(rights)
        return cls.from_mapping(data)

    def allows(self, who: Identity, lfn: str, right: Right) -> bool:
        """True when the nearest grant mentioning *right* on *lfn* or above names *who*."""
        for path in ancestors(lfn):
            entries = self.rules.get(path, {}).get(right)
            if entries is not None:
                return any(e.matches(who) for e in entries)
        return False
