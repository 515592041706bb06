"""``KeyBatch``: the keys of a recall batch, registered in one ``register_many`` while the
PACS sends; each handed out once, a failed one refused, the unused ones rolled back."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mdm.errors import NotEnoughShares
from mdm.keystore import new_key
from mdm.workers.instance import KeyBatch
from tests.unit.keyserver.inprocess import ALICE, BOB, Cluster
from tests.unit.keystore.test_keystore_quorums import present


def test_keys_are_taken_once_failures_raise_and_unused_are_rolled_back(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 5).start()
    try:
        keys = {g: (uuid.uuid4(), new_key()) for g in ("g-used", "g-unused", "g-bad")}
        with cluster.keystore(ALICE) as ks:
            ks.register(str(keys["g-bad"][0]), new_key())  # that id is taken: DuplicateKey
            acl = {f"dn:{BOB.dn}": ["read"]}
            items = [(str(kid), key, acl) for kid, key in keys.values()]
            with ThreadPoolExecutor(1) as pool:
                batch = KeyBatch(ks, keys, pool.submit(ks.register_many, items))
                assert len(batch) == 3
                assert batch.take("g-used") == keys["g-used"]
                assert batch.take("g-used") is None  # never one key for two encryptions
                assert batch.take("nobody") is None  # not prepared: the caller registers one
                with pytest.raises(NotEnoughShares):
                    batch.take("g-bad")
                assert batch.discard_unused() == 1
        unused, used, bad = (str(keys[g][0]) for g in ("g-unused", "g-used", "g-bad"))
        assert present(cluster, unused) == []
        assert present(cluster, used) == [1, 2, 3, 4, 5]
        assert present(cluster, bad) == [1, 2, 3, 4, 5]  # the earlier key, left untouched
        with cluster.keystore(BOB) as ks:
            assert ks.fetch(used) == keys["g-used"][1]
    finally:
        cluster.close()
