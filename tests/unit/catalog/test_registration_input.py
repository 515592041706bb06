"""Registration input checked where it is parsed (``catalog.registration``), for every caller:
wrong JSON types and naive times are refused with the field named, never stored or converted."""

from __future__ import annotations

import datetime as dt

import pytest

from mdm.catalog.models import ReplicaState
from mdm.catalog.registration import ReplicaSpec, file_info
from mdm.errors import UsageError


def test_file_info_takes_strings_and_an_integer_size() -> None:
    info = file_info({"size": 10, "adler32": "0000000a", "sha256": "a" * 64, "key_id": "k"})
    assert (info.size, info.adler32, info.sha256, info.key_id) == (10, "0000000a", "a" * 64, "k")
    assert file_info(None).size is None


@pytest.mark.parametrize(
    ("data", "named"),
    [({"size": "10"}, "size"), ({"size": True}, "size"), ({"adler32": 10}, "adler32"),
     ({"sha256": ["a"]}, "sha256"), ({"key_id": 7}, "key_id")],
)  # fmt: skip
def test_file_info_refuses_wrong_types(data: dict[str, object], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        file_info(data)


def test_a_replica_spec_needs_strings_and_an_aware_pin() -> None:
    spec = ReplicaSpec.from_json(
        {"se": "se1", "url": "https://se/x", "state": "online",
         "pinned_until": "2026-11-22T10:00:00+00:00"}
    )  # fmt: skip
    assert spec.state is ReplicaState.ONLINE
    assert spec.pinned_until == dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
    for bad, named in (
        ({"se": 1, "url": "u"}, "se"),
        ({"se": "s", "url": None}, "url"),
        ({"se": "s", "url": "u", "reason": 5}, "reason"),
        ({"se": "s", "url": "u", "pinned_until": "2026-11-22T10:00:00"}, "UTC offset"),
        ({"se": "s"}, "url"),
    ):
        with pytest.raises(UsageError, match=named):
            ReplicaSpec.from_json(bad)
