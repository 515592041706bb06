"""Grant and revoke: one call changes a study's catalog ACL and every one of its keys.

Levels (ARCHITECTURE.md) map to rights as follows; a grant of level N adds every level up to N,
a revoke of level N removes N and every level above it:

=====  ===========================  ============================================
level  catalog rights on the study  key servers
=====  ===========================  ============================================
1      ``list``, ``read``           nothing
2      ``decrypt``                  ``read`` on every existing key of the study
3      ``identity``                 (level 2 included)
=====  ===========================  ============================================

The catalog's ``decrypt`` is the record of level 2: keys of files never recalled do not exist
yet, and the recall worker gives each new key ``read`` for the holders of ``decrypt`` on its
study. A grant changes the catalog first and stops there if the catalog refuses; a revoke
changes the keys first (content matters most), then the catalog. What did not take is reported
key by key in ``AccessChange``, never swallowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mdm.acl import AclEntry
from mdm.client.keys import BulkAclResult
from mdm.errors import MDMError, UsageError

if TYPE_CHECKING:
    from mdm.client.core import Client

ROOT = "/dicom"
#: Catalog rights each level adds on the study directory.
CATALOG_RIGHTS = {1: ("list", "read"), 2: ("decrypt",), 3: ("identity",)}
KEY_RIGHTS = ("read",)


@dataclass
class AccessChange:
    """Outcome of ``grant``/``revoke``: catalog, then keys, each part reported."""

    study: str
    principal: str
    level: int
    catalog_done: bool = False
    catalog_error: MDMError | None = None
    keys: BulkAclResult = field(default_factory=BulkAclResult)
    #: Files of the study that have no key yet (never recalled): nothing to change there.
    files_without_key: int = 0

    @property
    def ok(self) -> bool:
        return self.catalog_error is None and self.keys.ok


def principal(text: str) -> str:
    """``dn:<DN>`` / ``fqan:<FQAN>``; a bare ``/DC=..`` is a DN, a bare ``/vo/..`` an FQAN."""
    if text.startswith(("dn:", "fqan:")):
        return str(AclEntry.parse(text))
    first = text.strip("/").split("/")[0]
    return str(AclEntry.parse(("dn:" if "=" in first else "fqan:") + text))


def study_path(study: str) -> str:
    path = study if study.startswith(ROOT + "/") else f"{ROOT}/{study.strip('/')}"
    if path.count("/") != 2:
        raise UsageError(f"grant and revoke act on a study (/dicom/<study UID>), not {study!r}")
    return path


def change_access(client: Client, study: str, to: str, level: int, *, grant: bool) -> AccessChange:
    """``Client.grant`` (``grant=True``) and ``Client.revoke``; see the module docstring."""
    if level not in (1, 2, 3):
        raise UsageError(f"access levels are 1, 2 and 3, not {level}")
    path, who = study_path(study), principal(to)
    change = AccessChange(path, who, level)
    touch_keys = level >= 2 if grant else level <= 2
    rights = catalog_rights(level, grant)
    if grant:
        _edit_catalog(client, change, rights, add=True)
        if change.catalog_error is not None:
            return change  # refused or unreachable: the key servers are left untouched
    if touch_keys:
        files = client.files(path)
        key_ids = [str(f["key_id"]) for f in files if f.get("key_id")]
        change.files_without_key = len(files) - len(key_ids)
        if grant:
            change.keys = client.keys.grant_all(key_ids, who, KEY_RIGHTS)
        else:
            change.keys = client.keys.revoke_all(key_ids, who, KEY_RIGHTS)
    if not grant:
        _edit_catalog(client, change, rights, add=False)
    return change


def _edit_catalog(
    client: Client, change: AccessChange, rights: Iterable[str], *, add: bool
) -> None:
    wanted = set(rights)
    if not wanted:
        change.catalog_done = True
        return
    try:
        acl = client.catalog.get_acl(change.study)["entries"]
        entries = {k: set(v) for k, v in acl.items()}
        have = entries.get(change.principal, set())
        entries[change.principal] = have | wanted if add else have - wanted
        client.catalog.set_acl(change.study, {k: sorted(v) for k, v in entries.items() if v})
        change.catalog_done = True
    except MDMError as exc:
        change.catalog_error = exc


def catalog_rights(level: int, grant: bool) -> set[str]:
    """Catalog rights a grant adds, or a revoke removes, for *level*."""
    if grant:
        return {r for lv in range(1, level + 1) for r in CATALOG_RIGHTS[lv]}
    return {r for lv in range(level, 4) for r in CATALOG_RIGHTS[lv]}


__all__ = [
    "CATALOG_RIGHTS",
    "AccessChange",
    "catalog_rights",
    "change_access",
    "principal",
    "study_path",
]
