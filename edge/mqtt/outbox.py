"""The durable outbox: every result is written here first and removed only when the broker acknowledges it.

SQLite in ``state_dir`` with WAL and ``synchronous=FULL``: once ``enqueue`` returns, the row survives
SIGKILL and power loss, and a write cut short is rolled back by SQLite, never half-applied. Rows leave in
``seq`` order, so a reconnect resends them in the order they were produced.

Two connections: results are inserted through one with ``synchronous=FULL`` (an fsync per result), while
acknowledged rows are deleted in batches through one with ``synchronous=NORMAL``: losing a delete to a power
cut only means a duplicate later (same ``event_id``), and the pipeline's insert never waits on an fsync
made for a delete.

Policy when full (``mqtt.outbox_cap`` rows): urgent results are never dropped. To make room, the oldest
row of the lowest rank goes first: routine, then unsure/soon. A new result is itself dropped when every
queued row outranks it, and a new urgent result is kept even above the cap (urgent results are rare; the
cap bounds the routine flood of a device that is offline for weeks). Every drop is logged and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge import sqlite_files
from edge.types import Urgency

log = logging.getLogger("edge.mqtt")
OUTBOX_FILE = "mqtt-outbox.sqlite"
NEVER_DROPPED = 2
RANKS = {Urgency.ROUTINE: 0, Urgency.UNSURE: 1, Urgency.SOON: 1, Urgency.URGENT: NEVER_DROPPED}

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    rank INTEGER NOT NULL,
    payload BLOB NOT NULL,
    release_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_rank_seq ON outbox (rank, seq);
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    event_id: str
    payload: bytes
    release_at: float = 0.0  # not sent before this unix time (see MqttService: privacy of timing)


class Outbox:
    """Thread-safe: the pipeline thread enqueues, the MQTT thread reads and removes, a purge command clears."""

    def __init__(self, path: Path, cap: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.cap = cap
        self.dropped = 0
        self.delivered = 0
        self._lock = threading.Lock()  # the writer connection and the depth counter
        self._sender_lock = threading.Lock()
        self._db, self._sender = self._connect()
        self._depth = self._count()
        self._file = _file_id(path)
        if self._depth > cap:
            self._trim_to_cap()

    def _connect(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        """The writer and the sender. The writer opens first: a damaged file is set aside there, before the
        sender connects."""
        writer = sqlite_files.connect(self.path, synchronous="FULL", setup=SCHEMA, timeout=30)
        return writer, sqlite_files.connect(self.path, synchronous="NORMAL", timeout=30)

    def _count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction on the writer connection (``_lock`` held): on any error the depth is counted
        again from the file, whatever the transaction had changed of it."""
        try:
            with _transaction(self._db):
                yield
        except BaseException:
            self._depth = self._count()
            raise

    def _reopen_if_replaced(self) -> None:
        """The file was deleted or replaced under the open connections (someone tidying /var/lib/edge): what
        they hold would vanish at the next start, and every result queued from now on with it. Reopen the
        path and carry the queued rows over. Called with ``_lock`` held."""
        if _file_id(self.path) == self._file:
            return
        # with their seq numbers: the publisher's place in the queue and its in-flight messages refer to them
        rows = self._db.execute("SELECT seq, event_id, rank, payload, release_at FROM outbox ORDER BY seq").fetchall()
        # ... and the numbering goes on where it was: a new file would start at 1, below the publisher's place
        last = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        with self._sender_lock:
            self._sender.close()
            self._db.close()
            self._db, self._sender = self._connect()
        with self._writing():
            self._db.executemany("INSERT OR IGNORE INTO outbox (seq, event_id, rank, payload, release_at) "
                                 "VALUES (?, ?, ?, ?, ?)", rows)
            if last is not None:
                self._db.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
                self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (max(last[0], 0),))
        self._depth = self._count()
        self._file = _file_id(self.path)
        log.error("outbox %s was deleted or replaced while running: reopened it with the %d queued results",
                  self.path, len(rows))

    def _trim_to_cap(self) -> None:
        """A cap lowered since the rows were queued (set_config, then a restart): drop by the same policy as
        a new result would, oldest lowest rank first, never urgent."""
        with self._lock, self._writing():
            while self._depth > self.cap and self._make_room(NEVER_DROPPED - 1):
                pass

    def enqueue(self, event_id: str, payload: bytes, urgency: Urgency, release_at: float = 0.0) -> bool:
        """Store one message durably; False if the cap policy dropped this message instead of an older one."""
        rank = RANKS[Urgency(urgency)]
        with self._lock:
            self._reopen_if_replaced()
            with self._writing():
                room = self._depth < self.cap or self._make_room(rank)
                if room:
                    self._db.execute("INSERT INTO outbox (event_id, rank, payload, release_at) VALUES (?, ?, ?, ?)",
                                     (event_id, rank, payload, release_at))
            if not room:  # nothing was written: an empty transaction, committed
                self._count_drop(f"new {Urgency(urgency).value} result {event_id[:8]}")
                return False
            self._depth += 1
        return True

    def _make_room(self, rank: int) -> bool:
        """Delete the oldest row of the lowest rank not above ``rank`` (never urgent); False if none fits."""
        if rank >= NEVER_DROPPED:
            victim = self._db.execute("SELECT seq, event_id FROM outbox WHERE rank < ? ORDER BY rank, seq LIMIT 1",
                                      (NEVER_DROPPED,)).fetchone()
            if victim is None:
                log.warning("outbox holds %d urgent results (cap %d): keeping this urgent one above the cap",
                            self._depth, self.cap)
                return True
        else:
            victim = self._db.execute("SELECT seq, event_id FROM outbox WHERE rank <= ? ORDER BY rank, seq LIMIT 1",
                                      (rank,)).fetchone()
            if victim is None:
                return False
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (victim[0],))
        self._depth -= 1
        self._count_drop(f"queued result {victim[1][:8]} (seq {victim[0]})")
        return True

    def _count_drop(self, what: str) -> None:
        self.dropped += 1
        log.warning("outbox full (cap %d): dropped %s; %d dropped since start", self.cap, what, self.dropped)

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[OutboxRow]:
        """Rows after ``after_seq``, oldest first."""
        with self._sender_lock:
            rows = self._sender.execute("SELECT seq, event_id, payload, release_at FROM outbox WHERE seq > ? "
                                        "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [OutboxRow(seq, event_id, bytes(payload), release_at) for seq, event_id, payload, release_at in rows]

    def remove(self, seqs: list[int]) -> None:
        """The broker acknowledged these rows: forget them. A row dropped meanwhile is simply not there."""
        if not seqs:
            return
        # The depth lock is held across the delete: a purge (clear) in between would otherwise zero the depth
        # and this subtraction take it below zero.
        with self._lock, self._sender_lock:
            with _transaction(self._sender):
                deleted = sum(self._sender.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
                              for seq in seqs)
            self._depth -= deleted
        self.delivered += deleted

    def depth(self) -> int:
        return self._depth

    def event_ids(self) -> list[str]:
        with self._sender_lock:
            return [row[0] for row in self._sender.execute("SELECT event_id FROM outbox ORDER BY seq")]

    def clear(self) -> int:
        with self._lock:
            deleted = self._db.execute("DELETE FROM outbox").rowcount
            self._depth = 0
            sqlite_files.scrub(self._db)
            sqlite_files.remove_set_aside(self.path)  # a damaged outbox kept aside holds results too
        return deleted

    def close(self) -> None:
        with self._lock, self._sender_lock:
            self._sender.close()
            self._db.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (unless SQLite already did, as on a full disk)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
