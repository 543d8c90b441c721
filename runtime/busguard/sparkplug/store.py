"""Store-and-forward: the changes made while the broker or the primary host is away.

An SQLite file in the state directory (one transaction per batch, so a power cut loses no
committed change and a restart sends what the last run could not). It is bounded in changes
(metrics), as site.toml says: when full, new changes are refused and counted, never the
held ones overwritten, and the publisher raises the queue-full status and a log line with
both numbers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path


class Store:
    """A FIFO of (device, payload bytes, metric count) rows on disk."""

    def __init__(self, path: Path, max_changes: int) -> None:
        self.path = path
        self.max_changes = max_changes
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY "
                        "AUTOINCREMENT, device TEXT NOT NULL, payload BLOB NOT NULL, "
                        "changes INTEGER NOT NULL)")
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(changes), 0) FROM queue").fetchone()
        self.messages, self.held = int(row[0]), int(row[1])
        self.dropped = 0  # changes refused because the queue was full (this run)

    @property
    def full(self) -> bool:
        return self.held >= self.max_changes

    def put(self, rows: list[tuple[str, bytes, int]]) -> int:
        """Append rows in order, as many as fit; returns the changes refused."""
        keep: list[tuple[str, bytes, int]] = []
        refused = 0
        held = self.held
        for dev, body, n in rows:
            if held + n > self.max_changes:
                refused += n
                continue
            keep.append((dev, body, n))
            held += n
        if keep:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT INTO queue (device, payload, changes) "
                                    "VALUES (?, ?, ?)", keep)
            self.messages += len(keep)
            self.held = held
        self.dropped += refused
        return refused

    def peek(self, limit: int = 256) -> Iterator[tuple[int, str, bytes, int]]:
        yield from self.db.execute("SELECT id, device, payload, changes FROM queue ORDER BY "
                                   "id LIMIT ?", (limit,))

    def remove_through(self, last_id: int, messages: int, changes: int) -> None:
        """Forget the rows up to ``last_id`` (sent)."""
        self.db.execute("DELETE FROM queue WHERE id <= ?", (last_id,))
        self.messages -= messages
        self.held -= changes

    def close(self) -> None:
        self.db.close()
