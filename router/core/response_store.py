"""The stored responses of the stateful Responses API (api/responses.py): one
SQLite file in the router's state folder, next to memory.json and the saved KV
caches, so a conversation outlives a swap, a model change and a restart.

Each row is one response: its owner (a digest of the API key that made it, never
the key), the id of the response it continued, the input items its request sent
(only its own: the earlier ones are in the rows before it), its output items and
the response object. The chain of a conversation is read in one recursive query.
Bounded by age and by size: past them the oldest rows go first.

Plain blocking calls, safe from any thread (one connection, one lock): the
routes run them in a worker thread (asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_NAME = "responses.sqlite"
NO_KEY = "-"  # the owner of what requests without an API key stored (a router without keys)
MAX_CHAIN = 100_000  # links followed at most (a cycle cannot be made, but a bound costs nothing)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, previous TEXT, model TEXT NOT NULL, created REAL NOT NULL,
    input TEXT NOT NULL, output TEXT NOT NULL, response TEXT NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS responses_owner ON responses (owner);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""
_CHAIN = """
WITH RECURSIVE chain(id, previous, input, output, depth) AS (
    SELECT id, previous, input, output, 0 FROM responses WHERE id = ? AND owner = ?
    UNION ALL
    SELECT r.id, r.previous, r.input, r.output, c.depth + 1 FROM responses r JOIN chain c ON r.id = c.previous
    WHERE r.owner = ? AND c.depth < ?)
SELECT input, output FROM chain ORDER BY depth DESC
"""


def owner_of(secret: str | None) -> str:
    """Who owns what a request stores: a digest of its API key (the key itself is never kept)."""
    if not secret:
        return NO_KEY
    return hashlib.sha256(b"llama-router responses\0" + secret.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Stored:
    """One response as it was kept."""

    id: str
    previous: str | None
    model: str
    created: float
    input: list[Any]
    output: list[Any]
    response: dict[str, Any]


class ResponseStore:
    """The file is opened (made, 0600) on first use: a router that stores nothing writes nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def _exists(self) -> bool:
        """Whether there is anything to read: reads never make the file."""
        return self._conn is not None or self.path.exists()

    @property
    def _db(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.path.touch(mode=0o600)  # conversations are private
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                self._conn = db
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def put(self, owner: str, item: Stored, max_bytes: int, max_age: float) -> None:
        """Keep `item` (replacing one of the same id), then trim the store to its bounds."""
        row = (json.dumps(item.input), json.dumps(item.output), json.dumps(item.response))
        size = sum(len(s) for s in row)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (item.id, owner, item.previous, item.model, item.created, *row, size))
            self._trim(max_bytes, max_age)

    def get(self, owner: str, response_id: str) -> Stored | None:
        if not self._exists():
            return None
        with self._lock:
            row = self._db.execute("SELECT id, previous, model, created, input, output, response FROM responses "
                                   "WHERE id = ? AND owner = ?", (response_id, owner)).fetchone()
        if row is None:
            return None
        return Stored(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]), json.loads(row[6]))

    def chain(self, owner: str, response_id: str) -> list[tuple[list[Any], list[Any]]] | None:
        """The (input items, output items) of each response of the conversation that ends at
        `response_id`, oldest first; None when that response is not this owner's (or gone).
        A deleted response ends the chain: the conversation starts after it."""
        if not self._exists():
            return None
        with self._lock:
            rows = self._db.execute(_CHAIN, (response_id, owner, owner, MAX_CHAIN)).fetchall()
        if not rows:
            return None
        return [(json.loads(i), json.loads(o)) for i, o in rows]

    def delete(self, owner: str, response_id: str) -> bool:
        if not self._exists():
            return False
        with self._lock:
            return self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?",
                                    (response_id, owner)).rowcount > 0

    def owners(self) -> list[tuple[str, int, int]]:
        """(owner, responses, bytes) of every owner with something stored."""
        if not self._exists():
            return []
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT owner, COUNT(*), SUM(size) FROM responses GROUP BY owner ORDER BY owner")]

    def delete_owner(self, owner: str) -> int:
        if not self._exists():
            return 0
        with self._lock:
            return self._db.execute("DELETE FROM responses WHERE owner = ?", (owner,)).rowcount

    def _trim(self, max_bytes: int, max_age: float) -> None:
        """Past `max_age` seconds, or beyond `max_bytes` in all, the oldest responses go (0: no bound)."""
        if max_age > 0:
            self._db.execute("DELETE FROM responses WHERE created < ?", (time.time() - max_age,))
        if max_bytes <= 0:
            return
        total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0]
        if total <= max_bytes:
            return
        excess, cut = total - max_bytes, None
        for created, size in self._db.execute("SELECT created, size FROM responses ORDER BY created"):
            excess -= size
            cut = created
            if excess <= 0:
                break
        if cut is not None:
            self._db.execute("DELETE FROM responses WHERE created <= ?", (cut,))
