"""The one authorisation layer of the catalog: who may do what on which directory.

Rights (``models.Right``) are granted to ACL entries (``dn:<DN>`` or ``fqan:/vo/...``, the
vocabulary of ``mdm.acl``) on ``/dicom``, a study directory or a series directory, and are
inherited downward: the rights on a path are the union of the grants on it and on each ancestor
directory. Default deny. Every catalog query and every endpoint goes through ``Caller``: either a
point check (``require``) or an SQL scope (``scope_clause``) that filters rows in the database,
so counts, limits and offsets are computed after scoping (Orthanc's and Rucio's lesson: one
scoping function for every path).

To match in SQL, a caller is expanded once into the exact set of ACL entry strings it satisfies
(``principals_of``), mirroring ``AclEntry.matches``: a member of ``/vo/a/b`` satisfies
``fqan:/vo``, ``fqan:/vo/a`` and ``fqan:/vo/a/b``; a role satisfies ``fqan:<its group>/Role=r``
only. Administrators hold every right; service identities (storage elements, recall workers)
hold list, read and write everywhere but never ``identity``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, literal, or_, select, true
from sqlalchemy.orm import Session

from mdm.acl import AclEntry, Identity, any_matches, normalize_fqan
from mdm.catalog.models import AclGrant, Right
from mdm.errors import PermissionDenied, UsageError

ROOT = "/dicom"
SERVICE_RIGHTS = frozenset({Right.LIST, Right.READ, Right.WRITE})


def principals_of(who: Identity) -> list[str]:
    """Every ACL entry string that names *who* (what ``AclEntry.matches`` would accept)."""
    out = [f"dn:{who.dn}"]
    for fqan in who.fqans:
        try:
            norm = normalize_fqan(fqan)
        except UsageError:
            continue
        parts = norm.strip("/").split("/")
        groups = [p for p in parts if not p.startswith("Role=")]
        roles = [p for p in parts if p.startswith("Role=")]
        for i in range(1, len(groups) + 1):
            out.append("fqan:/" + "/".join(groups[:i]))
        if roles:
            out.append("fqan:/" + "/".join(groups) + "/" + roles[0])
    return sorted(set(out))


def split_path(path: str) -> list[str]:
    """Components under ``/dicom``: ``/dicom/s/se/i`` -> ``[s, se, i]``; anything else refused."""
    if path != ROOT and not path.startswith(ROOT + "/"):
        raise UsageError(f"catalog paths start with {ROOT}/: {path!r}", path=path)
    parts = [p for p in path[len(ROOT) :].split("/") if p]
    if len(parts) > 3 or any(p in (".", "..") for p in parts):
        raise UsageError(f"not a catalog path: {path!r}", path=path)
    return parts


def anchors(path: str) -> list[str]:
    """Directories whose grants apply to *path*: ``/dicom``, study and series directories."""
    parts = split_path(path)[:2]
    return [ROOT] + [ROOT + "/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class Caller:
    """A verified identity as the catalog sees it; build it with ``Caller.of``."""

    identity: Identity
    principals: tuple[str, ...]
    admin: bool = False
    service: bool = False

    @classmethod
    def of(
        cls,
        who: Identity,
        *,
        admin_entries: Iterable[str] = (),
        service_entries: Iterable[str] = (),
    ) -> Caller:
        return cls(
            identity=who,
            principals=tuple(principals_of(who)),
            admin=any_matches(list(admin_entries), who),
            service=any_matches(list(service_entries), who),
        )

    @property
    def name(self) -> str:
        return self.identity.dn

    def implicit(self, right: Right) -> bool:
        """Rights held everywhere by role, without any ACL row."""
        return self.admin or (self.service and right in SERVICE_RIGHTS)


#: Keys per ``IN`` list of the catalog's set-wide reads (grants, entries, pins, UID maps):
#: far below SQLite's and PostgreSQL's limits on bound parameters.
CHUNK = 500


def chunks(keys: Sequence[str] | Sequence[int]) -> Iterator[Sequence[Any]]:
    """*keys* a ``CHUNK`` at a time, for ``column.in_(chunk)``."""
    for i in range(0, len(keys), CHUNK):
        yield keys[i : i + CHUNK]


class Grants:
    """*caller*'s grants on the directories above the paths it is asked about, read from the
    database once per directory: the point check for many paths at once (a staging request of
    10,000 files asks two rights of each, which were two queries per file).

    ``load`` reads the grants above many paths in a few queries; ``has`` reads what it lacks.
    It lives for one session: grants changed after it read them are not seen."""

    def __init__(self, session: Session, caller: Caller) -> None:
        self.session, self.caller = session, caller
        self._held: set[tuple[str, Right]] = set()
        self._loaded: set[str] = set()

    def load(self, paths: Iterable[str]) -> Grants:
        """Read the grants on every directory above *paths* not read yet."""
        if self.caller.admin:
            return self  # every right by role: nothing to read
        dirs = sorted({a for p in paths for a in anchors(p)} - self._loaded)
        for chunk in chunks(dirs):
            stmt = select(AclGrant.path, AclGrant.right).where(
                AclGrant.principal.in_(self.caller.principals), AclGrant.path.in_(chunk)
            )
            self._held.update((path, right) for path, right in self.session.execute(stmt))
        self._loaded.update(dirs)
        return self

    def has(self, path: str, right: Right) -> bool:
        """Whether *caller* holds *right* on *path*: by role, or granted on it or above it."""
        if self.caller.implicit(right):
            return True
        dirs = anchors(path)
        self.load(dirs)
        return any((d, right) in self._held for d in dirs)

    def require(self, path: str, right: Right) -> None:
        """Raise ``PermissionDenied`` unless *caller* holds *right* on *path* (default deny)."""
        if not self.has(path, right):
            raise PermissionDenied(f"{right.value} right needed on {path}", path=path, right=right)


def has_right(session: Session, caller: Caller, path: str, right: Right) -> bool:
    return Grants(session, caller).has(path, right)


def require(session: Session, caller: Caller, path: str, right: Right) -> None:
    """Raise ``PermissionDenied`` unless *caller* holds *right* on *path* (default deny)."""
    Grants(session, caller).require(path, right)


def scope_clause(caller: Caller, right: Right, *paths: ColumnElement[str]) -> ColumnElement[bool]:
    """SQL condition: *caller* holds *right* on ``/dicom`` or on one of the *paths* expressions."""
    if caller.implicit(right):
        return true()
    return exists().where(
        AclGrant.right == right,
        AclGrant.principal.in_(caller.principals),
        or_(AclGrant.path == literal(ROOT), *(AclGrant.path == p for p in paths)),
    )


def granted_paths(session: Session, caller: Caller, right: Right) -> list[str]:
    """Directories on which *caller* holds *right* directly (for the AMGA inference check)."""
    stmt = select(AclGrant.path).where(
        AclGrant.right == right, AclGrant.principal.in_(caller.principals)
    )
    return sorted(set(session.scalars(stmt)))


def get_acl(session: Session, path: str) -> dict[str, list[str]]:
    """Grants set directly on *path*: ``{entry: [rights]}``."""
    split_path(path)
    out: dict[str, list[str]] = {}
    for grant in session.scalars(select(AclGrant).where(AclGrant.path == path)):
        out.setdefault(grant.principal, []).append(grant.right.value)
    return {k: sorted(v) for k, v in sorted(out.items())}


def effective_rights(session: Session, caller: Caller, path: str) -> list[str]:
    """Rights *caller* holds on *path*, inherited ones included."""
    return [r.value for r in Right if has_right(session, caller, path, r)]


def set_acl(session: Session, path: str, entries: Mapping[str, Iterable[str]]) -> None:
    """Replace the grants on directory *path* by *entries* (``{acl entry: [rights]}``)."""
    if len(split_path(path)) > 2:
        raise UsageError("ACLs are set on /dicom, study or series directories", path=path)
    rows: set[tuple[str, Right]] = set()
    for entry, rights in entries.items():
        principal = str(AclEntry.parse(entry))
        for name in rights:
            try:
                rows.add((principal, Right(name)))
            except ValueError as exc:
                known = ", ".join(r.value for r in Right)
                raise UsageError(f"unknown right {name!r} (known: {known})") from exc
    session.execute(delete(AclGrant).where(AclGrant.path == path))
    session.add_all(AclGrant(path=path, principal=p, right=r) for p, r in sorted(rows))
    session.flush()
