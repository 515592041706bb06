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


def test_a_claimed_key_is_used_before_its_registration_and_settled_after(
    tmp_path: Path,
) -> None:
    """The pool encrypts with a batch key without waiting for the key servers (``claim``)
    and writes the file under a temporary name; ``settle`` then saves the recipe and renames
    the file only if that key was registered, and otherwise fails the file and removes it."""
    import threading

    from mdm.crypto import Header
    from mdm.workers import cache
    from mdm.workers.instance import Outcome, Pending, Work, settle
    from mdm.workers.recipe import RecipeStore, first_encryption

    cluster = Cluster(tmp_path, 5).start()
    try:
        keys = {g: (uuid.uuid4(), new_key()) for g in (str(uuid.uuid4()), str(uuid.uuid4()))}
        good, bad = list(keys)
        recipes = RecipeStore(tmp_path / "recipes")
        root = tmp_path / "cache"
        with cluster.keystore(ALICE) as ks:
            ks.register(str(keys[bad][0]), new_key())  # that id is taken: DuplicateKey
            acl = {f"dn:{BOB.dn}": ["read"]}
            items = [(str(kid), key, acl) for kid, key in keys.values()]
            gate = threading.Event()

            def registration() -> object:
                gate.wait(10)  # the registration is still running while the pool encrypts
                return ks.register_many(items)

            with ThreadPoolExecutor(1) as pool:
                batch = KeyBatch(ks, keys, pool.submit(registration))
                outcomes = []
                for guid in (good, bad):
                    key_id, key = batch.claim(guid) or (None, b"")
                    assert key_id == keys[guid][0]  # at once, before the registration
                    assert batch.claim(guid) is None  # never one key for two encryptions
                    header = Header.new(100, key_id=key_id, file_guid=uuid.UUID(guid), k=3, n=5)
                    blob, recipe = first_encryption(bytes(100), key, header)
                    dst = cache.cache_path(root, f"/dicom/s/r/{guid}")
                    tmp = cache.write_temporary(dst, blob)
                    work = Work([1], f"/dicom/s/r/{guid}", guid, "main", None, None, None)
                    outcomes.append(
                        Outcome(work, None, len(blob), {}, "", {}, Pending(tmp, dst, recipe))
                    )
                assert not any(o.pending.dst.exists() for o in outcomes if o.pending)
                done_already = Outcome(Work([2], "/dicom/s/r/x", "x", "main", 1, "a", "b"), "PACS")
                gate.set()
                settled = settle([*outcomes, done_already], batch, recipes)
        ok, failed, unchanged = settled
        assert (ok.reason, ok.pending) == (None, None)
        assert cache.cache_path(root, f"/dicom/s/r/{good}").exists()
        assert recipes.load(good) is not None
        assert str(failed.reason).startswith("NotEnoughShares")
        assert not cache.cache_path(root, f"/dicom/s/r/{bad}").exists()
        assert recipes.load(bad) is None
        assert unchanged is done_already
        assert sorted(p.name for p in (root / "dicom" / "s" / "r").iterdir()) == [good]
    finally:
        cluster.close()
