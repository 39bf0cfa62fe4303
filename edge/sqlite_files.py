"""Opening the device's SQLite files (MQTT outbox, command nonces, screening history) so that a damaged one
is set aside instead of stopping the device.

SD cards fail: a file that is no longer a database, or whose pages are corrupt, must not keep the kiosk
from screening. Such a file is renamed to ``<name>.corrupt-<UTC time>`` (with its ``-wal``/``-shm``
companions), kept for whoever wants to recover rows from it, logged as an error, and an empty file takes its
place. Only corruption does this: a locked file, a full disk or a permission problem is raised as before.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from glob import escape as glob_escape
from pathlib import Path

log = logging.getLogger("edge.storage")
_CORRUPTION = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_COMPANIONS = ("-wal", "-shm")


class _Damaged(Exception):
    """The integrity check reported problems."""


def is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, _Damaged):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(_CORRUPTION)
    return type(exc) is sqlite3.DatabaseError  # "file is not a database", "disk image is malformed"


def connect(path: Path, *, synchronous: str = "FULL", setup: str = "", timeout: float = 5.0) -> sqlite3.Connection:
    """An autocommit WAL connection to ``path`` with ``setup`` (CREATE … IF NOT EXISTS) applied, after a
    quick integrity check; a damaged file is set aside and replaced by an empty one (see the module doc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _open(path, synchronous, setup, timeout, check=True)
    except (sqlite3.DatabaseError, _Damaged) as exc:
        if not is_corruption(exc):
            raise
        aside = set_aside(path)
        log.error("%s is damaged (%s): moved it to %s and started an empty one", path, exc, aside.name)
        return _open(path, synchronous, setup, timeout, check=False)


def _open(path: Path, synchronous: str, setup: str, timeout: float, *, check: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
        if check:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise _Damaged(problems[0].splitlines()[-1] if problems else "integrity check returned nothing")
        if setup:
            db.executescript(setup)
    except BaseException:
        db.close()
        raise
    return db


def scrub(db: sqlite3.Connection) -> None:
    """After deleting what must be gone (a purge, an erased note): rebuild the file without free pages and
    empty the write-ahead log, which otherwise keeps the old pages, readable, while the connection is open."""
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def set_aside_copies(path: Path) -> list[Path]:
    """The files ``set_aside`` made of ``path`` (with their WAL companions)."""
    return sorted(path.parent.glob(f"{glob_escape(path.name)}.corrupt-*"))


def remove_set_aside(path: Path) -> int:
    """Delete the set-aside copies of ``path``: a purge must not leave the rows they hold. How many files went."""
    removed = 0
    for copy in set_aside_copies(path):
        copy.unlink(missing_ok=True)
        removed += 1
    return removed


def set_aside(path: Path) -> Path:
    """Rename ``path`` and its WAL companions to ``*.corrupt-<UTC time>``; the new name of ``path``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", *_COMPANIONS):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside
