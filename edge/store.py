"""Local SQLite history for health-worker mode: one row per screening, on this device only.

Opt-in (``kiosk.health_worker_mode``). Rows hold the result, urgency, time and an optional note typed by the
health worker; never an image, never a name. CSV export for the worker's own records, and a purge.
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

from edge import sqlite_files
from edge.types import Result

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    label TEXT NOT NULL,
    display_name TEXT NOT NULL,
    confidence REAL NOT NULL,
    urgency TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
)
"""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = ("id", "time", "label", "display_name", "confidence", "urgency", "abstained", "model_version", "note")


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite_files.connect(path, setup=SCHEMA)
        self._lock = threading.Lock()

    def record(self, result: Result) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO history (id, time, label, display_name, confidence, urgency, abstained, "
                "model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (result.id, result.timestamp, result.label, result.display_name, result.confidence,
                 result.urgency.value, int(result.abstained), result.model.version))

    def set_note(self, result_id: str, note: str) -> bool:
        with self._lock:
            before = self._db.execute("SELECT note FROM history WHERE id = ?", (result_id,)).fetchone()
            changed = self._db.execute("UPDATE history SET note = ? WHERE id = ?", (note, result_id)).rowcount == 1
            if changed and before[0] and before[0] != note:  # a replaced or erased note must not stay readable
                sqlite_files.scrub(self._db)  # in the write-ahead log or in free pages
            return changed

    def entries(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM history ORDER BY time DESC").fetchall()
        return [dict(zip(COLUMNS, row)) for row in rows]

    def csv(self) -> str:
        """The history as CSV. A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR at
        its start: a note typed as "=HYPERLINK(…)") gets a leading apostrophe, so it is shown as text."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for entry in self.entries():
            writer.writerow([_as_text(entry[c]) for c in COLUMNS])
        return buffer.getvalue()

    def purge(self) -> int:
        """Delete every row, for real, and the copies of a damaged history file that was set aside (they hold
        its rows). The number of rows deleted from the current file."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM history").rowcount
            sqlite_files.scrub(self._db)
            sqlite_files.remove_set_aside(self.path)
        return deleted

    def close(self) -> None:
        self._db.close()


def _as_text(value):
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value
