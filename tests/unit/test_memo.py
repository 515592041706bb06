"""``mdm.memo.Memo``: remembers by key, never holds more than its limit, and starts afresh
when full (the recall's header, element and core memos rely on both)."""

from __future__ import annotations

import threading

import pytest

from mdm.memo import Memo


def test_it_remembers_and_stays_within_its_limit() -> None:
    memo: Memo[int, str] = Memo(3)
    for i in range(3):
        memo.put(i, str(i))
    assert [memo.get(i) for i in range(3)] == ["0", "1", "2"]
    assert memo.get(7) is None
    memo.put(3, "3")  # full: everything forgotten, then the new entry kept
    assert len(memo) == 1
    assert memo.get(0) is None
    assert memo.get(3) == "3"
    assert list(memo) == [3]
    with pytest.raises(ValueError, match="at least one"):
        Memo(0)


def test_threads_putting_at_once_never_pass_the_limit() -> None:
    memo: Memo[tuple[int, int], int] = Memo(50)
    sizes: list[int] = []

    def fill(t: int) -> None:
        for i in range(2000):
            memo.put((t, i), i)
            sizes.append(len(memo))
            list(memo)  # iterating while others put must not fail

    threads = [threading.Thread(target=fill, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert max(sizes) <= 50
    assert all(memo.get(k) == k[1] for k in memo)
