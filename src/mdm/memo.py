"""A bounded memo: results remembered by key, all forgotten at once when it is full.

The recall worker remembers, per series, what repeats from one instance to the next (the
header JSON of a raw element, the anonymizer's result for one value, an anonymized core). A
hit must cost a dictionary lookup and nothing more, so there is no recency bookkeeping:
when the memo holds *limit* entries it starts afresh, which costs one computation per key
again, never a wrong answer; the values of one series fill it again within an instance.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """At most *limit* entries; thread-safe (reads are single dictionary lookups)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a memo holds at least one entry")
        self._items: dict[K, V] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._items) >= self._limit:
                self._items.clear()
            self._items[key] = value

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        """The keys remembered now (a copy: safe while other threads put)."""
        with self._lock:
            return iter(list(self._items))
