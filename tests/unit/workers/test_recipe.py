"""Re-recall determinism: the recipe replays the library's encryption bit for bit, and refuses
any other plaintext before encrypting anything (no second plaintext under one key and nonce)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mdm.crypto import Header, decrypt_stream, new_key
from mdm.errors import UnsupportedFormat
from mdm.workers.recipe import NewVersion, Recipe, RecipeStore, first_encryption, replay


@pytest.mark.parametrize("size", [0, 1, 16383, 16384, 16385, 3 * 16384 + 7, 200_000])
def test_replay_gives_the_bytes_of_the_first_encryption(size: int) -> None:
    plaintext, key = os.urandom(size), new_key()
    header = Header.new(size, k=3, n=5)
    first, recipe = first_encryption(plaintext, key, header)
    assert replay(plaintext, key, recipe) == first
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(first), out, key)
    assert out.getvalue() == plaintext
    assert recipe.key_id == str(header.key_id)


def test_two_first_encryptions_differ_but_each_replays_to_itself() -> None:
    plaintext, key = os.urandom(5000), new_key()
    header = Header.new(len(plaintext), k=3, n=5)
    a, ra = first_encryption(plaintext, key, header)
    b, rb = first_encryption(plaintext, key, header)
    assert ra.salt != rb.salt, "the library salts every encryption"
    assert a != b
    assert replay(plaintext, key, ra) == a
    assert replay(plaintext, key, rb) == b


def test_another_plaintext_is_refused_as_a_new_version() -> None:
    plaintext, key = os.urandom(5000), new_key()
    _, recipe = first_encryption(plaintext, key, Header.new(len(plaintext), k=3, n=5))
    changed = bytearray(plaintext)
    changed[100] ^= 1
    with pytest.raises(NewVersion, match="new version with a new key"):
        replay(bytes(changed), key, recipe)


def test_a_wrong_key_cannot_pass_for_the_right_one() -> None:
    plaintext, key = os.urandom(3000), new_key()
    first, recipe = first_encryption(plaintext, key, Header.new(len(plaintext), k=3, n=5))
    assert replay(plaintext, new_key(), recipe) != first


def test_recipes_round_trip_and_refuse_garbage(tmp_path: Path) -> None:
    plaintext, key = b"x" * 100, new_key()
    _, recipe = first_encryption(plaintext, key, Header.new(100, k=2, n=3))
    assert Recipe.unpack(recipe.pack()) == recipe
    assert "salt" not in repr(recipe)
    assert recipe.salt.hex() not in repr(recipe)
    for bad in (b"", b"MDMRCP1\n", recipe.pack()[:-1], recipe.pack() + b"\0", b"x" * 80):
        with pytest.raises(UnsupportedFormat):
            Recipe.unpack(bad)
    store = RecipeStore(tmp_path / "recipes")
    guid = "0190a6b2-1111-7222-8333-444455556666"
    assert store.load(guid) is None
    store.save(guid, recipe)
    assert store.load(guid) == recipe
    assert not [p for p in store.path(guid).parent.iterdir() if p.name.endswith(".tmp")]
