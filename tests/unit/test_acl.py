from __future__ import annotations

import pytest

from mdm.acl import AclEntry, Identity, any_matches, normalize_fqan
from mdm.errors import UsageError

ALICE = Identity(
    dn="/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor",
    fqans=("/mdm", "/mdm/radiology/Role=physician", "/mdm/cardio"),
)
BOB = Identity(dn="/DC=org/DC=mdmtest/O=Hospital/CN=Bob", fqans=("/mdm/radiology",))


@pytest.mark.parametrize(
    ("entry", "alice", "bob"),
    [
        ("dn:/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor", True, False),
        ("fqan:/mdm", True, True),  # parent group of everyone's groups
        ("fqan:/mdm/radiology", True, True),  # group, any role
        ("fqan:/mdm/radiology/Role=physician", True, False),  # role only where held
        ("fqan:/mdm/cardio", True, False),
        ("fqan:/mdm/cardio/Role=physician", False, False),  # role held in another group
        ("fqan:/other", False, False),
        ("fqan:/mdm/radiology/Role=NULL/Capability=NULL", True, True),
    ],
)
def test_entry_matching(entry: str, alice: bool, bob: bool) -> None:
    e = AclEntry.parse(entry)
    assert e.matches(ALICE) is alice
    assert e.matches(BOB) is bob


def test_default_deny() -> None:
    assert not any_matches([], ALICE)


def test_subgroup_entry_does_not_match_parent_member() -> None:
    parent_only = Identity(dn="/CN=x", fqans=("/mdm",))
    assert not AclEntry.parse("fqan:/mdm/radiology").matches(parent_only)


@pytest.mark.parametrize("bad", ["alice", "user:/CN=x", "dn:", "fqan:Role=x", "fqan:"])
def test_bad_entries_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        AclEntry.parse(bad)


def test_normalize() -> None:
    assert normalize_fqan("/mdm/g/Role=NULL/Capability=NULL") == "/mdm/g"
    assert normalize_fqan("/mdm/g/Role=r") == "/mdm/g/Role=r"
