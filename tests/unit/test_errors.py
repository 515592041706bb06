from __future__ import annotations

import pickle

import pytest

from mdm import errors


def test_class_carries_http_status_and_travels_by_name() -> None:
    exc = errors.NotEnoughShares("only 2 of 3 shares", got=2, needed=3)
    body = exc.to_problem()
    assert body["status"] == 503
    assert body["type"] == "NotEnoughShares"
    back = errors.from_problem(body, 503)
    assert type(back) is errors.NotEnoughShares
    assert back.got == 2
    assert back.message == "only 2 of 3 shares"


def test_unknown_remote_type_becomes_remote_error() -> None:
    back = errors.from_problem({"type": "SomethingElse", "detail": "boom"}, 500)
    assert isinstance(back, errors.RemoteError)
    assert back.status == 500


def test_errors_pickle_with_context() -> None:
    exc = errors.FileOffline("stage it", lfn="/dicom/1/2/3")
    again = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
    assert type(again) is errors.FileOffline
    assert again.lfn == "/dicom/1/2/3"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.NotFound, LookupError),
        (errors.InvalidShares, ValueError),
    ],
)
def test_subclass_builtins_where_natural(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin)
    assert issubclass(cls, errors.MDMError)
