"""``access.principals_of`` must name exactly the ACL entries ``AclEntry.matches`` accepts.

The catalog matches ACLs in SQL against the expanded principal set, while the storage element
and the key server call ``AclEntry.matches``: if the two disagreed, the same grant would open a
directory in one service and not in the other. Checked on generated identities and entries.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.acl import AclEntry, Identity
from mdm.catalog.access import principals_of

_NAMES = st.sampled_from(["vo", "a", "b"])
_ROLES = st.sampled_from([None, "r", "s", "NULL"])


@st.composite
def _fqan(draw: st.DrawFn) -> str:
    groups = draw(st.lists(_NAMES, min_size=1, max_size=3))
    role = draw(_ROLES)
    return "/" + "/".join(groups) + (f"/Role={role}" if role else "")


_ENTRIES = st.one_of(
    st.sampled_from(["dn:/CN=alice", "dn:/CN=bob"]),
    _fqan().map(lambda f: f"fqan:{f}"),
)


@settings(max_examples=300, deadline=None)
@given(
    dn=st.sampled_from(["/CN=alice", "/CN=bob"]),
    fqans=st.lists(_fqan(), max_size=3),
    entry=_ENTRIES,
)
def test_principals_name_exactly_the_matching_entries(
    dn: str, fqans: list[str], entry: str
) -> None:
    who = Identity(dn, tuple(fqans))
    parsed = AclEntry.parse(entry)
    assert (str(parsed) in principals_of(who)) == parsed.matches(who), (who, entry)


def test_a_role_grants_only_its_own_group() -> None:
    who = Identity("/CN=carol", ("/vo/a/Role=r",))
    assert principals_of(who) == ["dn:/CN=carol", "fqan:/vo", "fqan:/vo/a", "fqan:/vo/a/Role=r"]
    assert not AclEntry.parse("fqan:/vo/Role=r").matches(who)
