"""The stored responses (router/core/response_store.py): a conversation read back
as its chain, owners kept apart, bounds by age and size, and a store that
outlives its process (a new ResponseStore on the same file)."""

from __future__ import annotations

import time

from router.core.response_store import NO_KEY, ResponseStore, Stored, owner_of

BIG = 1 << 30


def turn(rid: str, previous: str | None, text: str, created: float | None = None) -> Stored:
    user = [{"type": "message", "role": "user", "content": text}]
    out = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "re " + text}]}]
    return Stored(rid, previous, "m", time.time() if created is None else created, user, out,
                  {"id": rid, "output": out})


def test_a_chain_is_read_oldest_first_and_survives_a_new_store_on_the_file(tmp_path):
    path = tmp_path / "state" / "responses.sqlite"
    store = ResponseStore(path)
    me = owner_of("key-of-me-0123456789")
    for i in range(3):
        store.put(me, turn(f"r{i}", f"r{i - 1}" if i else None, f"t{i}"), BIG, 0)
    store.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = ResponseStore(path)
    chain = again.chain(me, "r2")
    assert chain is not None
    assert [i[0]["content"] for i, _ in chain] == ["t0", "t1", "t2"]
    assert [o[0]["content"][0]["text"] for _, o in chain] == ["re t0", "re t1", "re t2"]
    got = again.get(me, "r1")
    assert got is not None and got.previous == "r0" and got.response["id"] == "r1"


def test_owners_are_apart_and_the_key_itself_is_never_stored(tmp_path):
    path = tmp_path / "responses.sqlite"
    store = ResponseStore(path)
    me, other = owner_of("key-of-me-0123456789"), owner_of("key-of-other-0123456")
    assert owner_of(None) == NO_KEY and me != other and len(me) == 32
    store.put(me, turn("r0", None, "secret fact"), BIG, 0)
    assert store.get(other, "r0") is None and store.chain(other, "r0") is None and not store.delete(other, "r0")
    store.put(other, turn("x0", None, "theirs"), BIG, 0)
    assert sorted((o, n) for o, n, _ in store.owners()) == sorted([(me, 1), (other, 1)])
    store.close()
    assert b"key-of-me" not in path.read_bytes()
    store = ResponseStore(path)
    assert store.delete_owner(me) == 1 and store.get(me, "r0") is None and store.get(other, "x0") is not None


def test_a_deleted_turn_ends_the_chain_there(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    for i in range(3):
        store.put(NO_KEY, turn(f"r{i}", f"r{i - 1}" if i else None, f"t{i}"), BIG, 0)
    assert store.delete(NO_KEY, "r1")
    chain = store.chain(NO_KEY, "r2")
    assert chain is not None and [i[0]["content"] for i, _ in chain] == ["t2"]


def test_the_oldest_go_beyond_the_size_and_past_the_age(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    now = time.time()
    store.put(NO_KEY, turn("old", None, "x", created=now - 100), BIG, 0)
    store.put(NO_KEY, turn("new", None, "y", created=now), BIG, 50)
    assert store.get(NO_KEY, "old") is None and store.get(NO_KEY, "new") is not None
    size = store.owners()[0][2]
    for i in range(5):
        store.put(NO_KEY, turn(f"s{i}", None, "z", created=now + i + 1), 3 * size, 0)
    kept = [f"s{i}" for i in range(5) if store.get(NO_KEY, f"s{i}") is not None]
    assert kept == ["s2", "s3", "s4"]
    assert store.owners()[0][2] <= 3 * size
