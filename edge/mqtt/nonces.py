"""Nonces of accepted commands, kept in SQLite in ``state_dir`` so a replay is refused even after a reboot.

A nonce only needs remembering until its command has expired (plus the clock-skew allowance): after that
a replay is refused as expired anyway, so old rows are pruned and the table stays small.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from edge import sqlite_files

NONCE_FILE = "mqtt-nonces.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, forget_after REAL NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_forget ON nonces (forget_after);
"""


class NonceStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite_files.connect(path, setup=SCHEMA)
        self._lock = threading.Lock()

    def claim(self, nonce: str, forget_after: float, now: float) -> bool:
        """Record ``nonce``; False if it was already used (a replay). Check and record are one statement."""
        with self._lock:
            self._db.execute("DELETE FROM nonces WHERE forget_after < ?", (now,))
            try:
                self._db.execute("INSERT INTO nonces (nonce, forget_after) VALUES (?, ?)", (nonce, forget_after))
            except sqlite3.IntegrityError:
                return False
        return True

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
